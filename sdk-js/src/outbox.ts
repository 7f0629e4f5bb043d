/** Ops on the WebSocket: those waiting for a connection (bounded), those
 * sent and waiting for their answer (each with a timeout), publishes resent
 * with their keys after a lost connection, and keyed publishes retried when
 * the relay could not do them. */
import { backoffDelay } from "./backoff.js";
import { ClosedError, RETRIABLE, RelayError, relayError } from "./errors.js";
import type { AckEvent, ErrorEvent, Op } from "./protocol.js";

type Waiting = { resolve: (ev: AckEvent) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

/** An op as made and as sent (with its `ref`). */
type Queued = { op: Op; text: string; ref: number; keyed: boolean };

/** An op taken out of the outbox with its caller's callbacks. */
export type Taken = { op: Op; resolve: (ev: AckEvent) => void; reject: (e: Error) => void };

/** What the outbox needs from the client. */
export interface OutboxHost {
  /** True while the socket is open and welcomed. */
  isOpen(): boolean;
  /** Writes a frame to the socket. */
  write(text: string): void;
  /** True once the client was closed. */
  isStopped(): boolean;
  /** Milliseconds an answer may take. */
  ackTimeout(): number;
  readonly options: { maxQueue?: number; backoff?: { baseMs?: number; capMs?: number } };
}

/** The client's ops on the WebSocket, by `ref`. */
export class Outbox {
  private readonly waiting = new Map<number, Waiting>();
  private readonly queue: Queued[] = [];
  /** Publishes sent and not yet answered: on a lost connection they go back
   * to the queue and are sent again with the same idempotency key, so the
   * relay does each once. */
  private readonly inflight = new Map<number, Queued>();
  /** Retries made of each keyed publish the relay answered with a retriable error. */
  private readonly retries = new Map<number, number>();
  private nextRef = 1;

  constructor(private readonly host: OutboxHost) {}

  /** Sends `op` now, or queues it while disconnected; resolves with its
   * `ack`, rejects with the relay's error, a `timeout`, or a `ClosedError`. */
  send(op: Op): Promise<AckEvent> {
    const ref = this.nextRef++;
    const queued: Queued = { op, text: JSON.stringify({ ...op, ref }), ref, keyed: op.op === "pub" };
    return new Promise((resolve, reject) => {
      if (!this.host.isOpen() && this.queue.length >= (this.host.options.maxQueue ?? 1000)) {
        reject(new Error("disconnected and the send queue is full"));
        return;
      }
      const timer = setTimeout(() => this.timedOut(ref), this.host.ackTimeout());
      this.waiting.set(ref, { resolve, reject, timer });
      if (this.host.isOpen()) this.write(queued);
      else this.queue.push(queued);
    });
  }

  /** The socket was welcomed: what waited goes out, in order. */
  flush(): void {
    for (const queued of this.queue.splice(0)) this.write(queued);
  }

  /** The relay's answer to the op sent with `ref`. */
  answered(ref: number, event: AckEvent | ErrorEvent): void {
    const sent = this.inflight.get(ref);
    this.inflight.delete(ref);
    if (event.kind === "error" && sent !== undefined && this.retryKeyed(sent, event)) return;
    this.retries.delete(ref);
    const waiting = this.take(ref);
    if (event.kind === "ack") waiting?.resolve(event);
    else waiting?.reject(relayError(event));
  }

  /** The connection was lost: publishes sent on it go back to the head of
   * the queue (in the order sent) to go again with their keys; other ops
   * sent may or may not have been applied, and reject with `error`. */
  connectionLost(error: ClosedError): void {
    const sent = [...this.inflight.values()].sort((a, b) => a.ref - b.ref);
    this.inflight.clear();
    this.queue.unshift(...sent);
    const queued = new Set(this.queue.map((q) => q.ref));
    for (const ref of [...this.waiting.keys()]) if (!queued.has(ref)) this.take(ref)?.reject(error);
  }

  /** The client stopped: every op rejects with `error`. */
  stop(error: Error): void {
    this.queue.length = 0;
    this.inflight.clear();
    for (const ref of [...this.waiting.keys()]) this.take(ref)?.reject(error);
  }

  /** Takes every queued op out (to send it another way), with its callbacks. */
  drain(): Taken[] {
    return this.queue.splice(0).flatMap(({ op, ref }) => {
      const waiting = this.take(ref);
      return waiting ? [{ op, resolve: waiting.resolve, reject: waiting.reject }] : [];
    });
  }

  private write(queued: Queued): void {
    if (queued.keyed) this.inflight.set(queued.ref, queued);
    this.host.write(queued.text);
  }

  /** Forgets the caller of `ref` (its timer too) and returns it. */
  private take(ref: number): Waiting | undefined {
    const waiting = this.waiting.get(ref);
    if (!waiting) return undefined;
    this.waiting.delete(ref);
    clearTimeout(waiting.timer);
    return waiting;
  }

  /** No answer in time: an op still queued is dropped (never sent); one
   * sent may or may not have been applied, and the error says so. */
  private timedOut(ref: number): void {
    const waiting = this.take(ref);
    if (!waiting) return;
    this.retries.delete(ref);
    const ms = this.host.ackTimeout();
    const queued = this.queue.findIndex((q) => q.ref === ref);
    if (queued >= 0) {
      this.queue.splice(queued, 1);
      waiting.reject(new RelayError("timeout", `not sent: no connection to the relay within ${ms} ms`));
      return;
    }
    const publish = this.inflight.delete(ref);
    waiting.reject(
      new RelayError(
        "timeout",
        publish
          ? `no answer from the relay within ${ms} ms: the publish may still be delivered (once, by its idempotency key)`
          : `no answer from the relay within ${ms} ms: the op may or may not have been applied`,
      ),
    );
  }

  /** A keyed publish the relay could not do (or could not say whether it
   * did): sent again after a backoff, with the same key, a few times. */
  private retryKeyed(sent: Queued, error: ErrorEvent): boolean {
    const { ref } = sent;
    const attempt = this.retries.get(ref) ?? 0;
    if (!RETRIABLE.has(error.code) || attempt >= 4 || this.host.isStopped()) return false;
    this.retries.set(ref, attempt + 1);
    const hint = typeof error.retry_after === "number" ? error.retry_after * 1000 : 0;
    setTimeout(() => {
      if (this.host.isStopped() || !this.waiting.has(ref)) return;
      if (this.host.isOpen()) this.write(sent);
      else this.queue.push(sent);
    }, Math.max(hint, backoffDelay(attempt, this.host.options.backoff)));
    return true;
  }
}
