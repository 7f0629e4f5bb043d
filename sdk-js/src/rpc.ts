/** Request/response between peers of a room, over direct messages of two
 * reserved types: a call carries an id, the answer (or error) echoes it. */
import type { Message, PeerInfo } from "./protocol.js";

/** Message type of a call to a peer. */
export const REQUEST = "edgewire:request";
/** Message type of a peer's answer. */
export const RESPONSE = "edgewire:response";

/** Options of a request to a peer. */
export interface RequestOptions {
  /** Milliseconds before the request fails (default 10 000). */
  timeout?: number;
  /** Abandons the request (it rejects with the signal's reason). */
  signal?: AbortSignal;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout>; peer: string };

/** A room's calls to peers and its handlers for theirs. */
export class PeerCalls<State> {
  private handlers = new Map<string, (args: unknown, from: PeerInfo<State> | undefined) => unknown>();
  private pending = new Map<string, Pending>();

  /** `send(type, data, to)` publishes a direct message. */
  constructor(private readonly send: (type: string, data: unknown, to: string) => Promise<string>) {}

  /** Answers calls of `method` with `handler`'s result. */
  handle(method: string, handler: (args: unknown, from: PeerInfo<State> | undefined) => unknown): void {
    this.handlers.set(method, handler);
  }

  /** Calls `method` on `peer`; see `Room.request`. */
  call(peer: string, method: string, args: unknown, options: RequestOptions): Promise<unknown> {
    const id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`request ${method} to ${peer} timed out`));
      }, options.timeout ?? 10_000);
      signal?.addEventListener(
        "abort",
        () => {
          if (!this.pending.delete(id)) return;
          clearTimeout(timer);
          reject(signal.reason);
        },
        { once: true },
      );
      this.pending.set(id, { resolve, reject, timer, peer });
      this.send(REQUEST, { id, method, args }, peer).catch((e: Error) => {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e);
      });
    });
  }

  /** Handles a direct message of a reserved type; false for any other. */
  received(message: Message, from: PeerInfo<State> | undefined): boolean {
    if (!message.to) return false;
    if (message.type === REQUEST) {
      void this.answer(message, from);
      return true;
    }
    if (message.type === RESPONSE) {
      this.settle(message);
      return true;
    }
    return false;
  }

  /** A peer left: its unanswered calls fail. */
  left(peer: string): void {
    for (const [key, pending] of this.pending) {
      if (pending.peer === peer) {
        clearTimeout(pending.timer);
        this.pending.delete(key);
        pending.reject(new Error(`peer ${peer} left before answering`));
      }
    }
  }

  private async answer(message: Message, from: PeerInfo<State> | undefined): Promise<void> {
    const { id, method, args } = (message.data ?? {}) as { id?: string; method?: string; args?: unknown };
    const handler = method ? this.handlers.get(method) : undefined;
    let reply: Record<string, unknown>;
    try {
      if (!handler) throw new Error(`no handler for ${method}`);
      reply = { id, result: await handler(args, from) };
    } catch (e) {
      reply = { id, error: e instanceof Error ? e.message : String(e) };
    }
    await this.send(RESPONSE, reply, message.from).catch(() => undefined);
  }

  private settle(message: Message): void {
    const { id, result, error } = (message.data ?? {}) as { id?: string; result?: unknown; error?: string };
    const pending = id ? this.pending.get(id) : undefined;
    if (!pending || !id) return;
    clearTimeout(pending.timer);
    this.pending.delete(id);
    if (error !== undefined) pending.reject(new Error(error));
    else pending.resolve(result);
  }
}
