/** When to reconnect the WebSocket after it closed: the contract's close
 * codes (stop, a fresh token at once, the relay's retry hint, backoff), full
 * jitter, and a backoff that resets only after a connection held. */
import { backoffDelay } from "./backoff.js";
import { closePolicy } from "./codes.js";

/** What to do after a close. */
export type Next = { kind: "stop" } | { kind: "now" } | { kind: "after"; delayMs: number };

/** The reconnect state of one client. */
export class Reconnect {
  private attempt = 0;
  private openedAt = 0;
  private retryAfter?: number;
  /** One immediate reconnect with a fresh token per welcomed connection (on
   * 4401), so a token that keeps failing falls back to the backoff. */
  private quickRetoken = true;

  constructor(private readonly options: { backoff?: { baseMs?: number; capMs?: number }; minUptimeMs?: number }) {}

  /** A connection was welcomed. */
  opened(): void {
    this.openedAt = Date.now();
    this.quickRetoken = true;
  }

  /** A connection came up by another way (an upgrade from SSE): the backoff starts over. */
  reset(): void {
    this.openedAt = Date.now();
    this.attempt = 0;
  }

  /** The relay asked to wait this many seconds (before a 4429 close). */
  heardRetryAfter(seconds: number): void {
    this.retryAfter = seconds;
  }

  /** What to do after the socket closed with `code`. */
  afterClose(code: number): Next {
    const policy = closePolicy(code);
    if (policy === "stop") return { kind: "stop" };
    if (this.openedAt > 0 && Date.now() - this.openedAt >= (this.options.minUptimeMs ?? 5000)) this.attempt = 0;
    this.openedAt = 0;
    if (policy === "refresh-token" && this.quickRetoken) {
      this.quickRetoken = false;
      return { kind: "now" };
    }
    if (policy === "retry-after" && this.retryAfter !== undefined) {
      // Rate limited: wait what the relay asked, plus jitter so clients spread.
      const delayMs = this.retryAfter * 1000 + backoffDelay(0, { baseMs: 1000 });
      this.retryAfter = undefined;
      this.attempt++;
      return { kind: "after", delayMs };
    }
    return this.backoff();
  }

  /** The next backoff step (after a close, or a socket that could not be made). */
  backoff(): { kind: "after"; delayMs: number } {
    return { kind: "after", delayMs: backoffDelay(this.attempt++, this.options.backoff) };
  }
}
