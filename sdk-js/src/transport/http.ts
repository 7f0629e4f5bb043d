/** The HTTP side: calls to the relay's REST paths with the token in a
 * header, each bounded by the ack timeout, keyed writes retried with their
 * key, and the mapping of a room's ops to those paths. */
import { backoffDelay } from "../backoff.js";
import { RETRIABLE, RelayError } from "../errors.js";
import type { AckEvent, PubOp, StateOp, WillOp } from "../protocol.js";
import type { RoomSnapshot } from "../room.js";

/** What the HTTP calls need from the client. */
export interface HttpHost {
  /** `http(s)://` base of the relay. */
  readonly httpBase: string;
  /** The fetch implementation. */
  fetcher(): typeof fetch;
  /** The token of the current connection, fetching one when there is none. */
  currentToken(): Promise<string | undefined>;
  /** Milliseconds an answer may take. */
  ackTimeout(): number;
  /** Backoff bounds for retries. */
  readonly backoff?: { baseMs?: number; capMs?: number };
  /** True once the client was closed: retries stop. */
  isStopped(): boolean;
}

/** Calls to the relay over HTTP. */
export class HttpApi {
  constructor(private readonly host: HttpHost) {}

  /** One call; a 2xx as an `ack` (with the publish's `id`), anything else
   * as a `RelayError` with the contract's code. */
  async call(method: string, path: string, body?: unknown, key?: string): Promise<AckEvent> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (key) headers["idempotency-key"] = key;
    const token = await this.host.currentToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await this.timed(() =>
      this.host.fetcher()(`${this.host.httpBase}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.host.ackTimeout()),
      }),
    );
    const text = await this.timed(() => res.text());
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      // Not JSON: keep the status.
    }
    if (!res.ok) {
      const retry = Number(res.headers.get("retry-after")) || undefined;
      throw new RelayError(String(json.error ?? res.status), String(json.message ?? res.statusText), retry);
    }
    return typeof json.id === "string" ? { kind: "ack", id: json.id } : { kind: "ack" };
  }

  /** A room's presence and retained values (`GET /rooms/{room}`). */
  async snapshot(room: string): Promise<RoomSnapshot> {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = await this.host.currentToken();
    if (token) headers.authorization = `Bearer ${token}`;
    const url = `${this.host.httpBase}/rooms/${encodeURIComponent(room)}`;
    const res = await this.timed(() => this.host.fetcher()(url, { headers, signal: AbortSignal.timeout(this.host.ackTimeout()) }));
    if (!res.ok) throw new RelayError(String(res.status), res.statusText);
    return (await res.json()) as RoomSnapshot;
  }

  /** Runs a keyed write, retrying (with the same key, so it is done once)
   * while the relay is unreachable or answers 503: a few attempts with backoff. */
  async keyed(write: () => Promise<AckEvent>): Promise<AckEvent> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await write();
      } catch (e) {
        const retriable = e instanceof RelayError ? RETRIABLE.has(e.code) : (e as Error)?.name === "TypeError";
        if (!retriable || attempt >= 4 || this.host.isStopped()) throw e;
        const hint = e instanceof RelayError && e.retryAfter ? e.retryAfter * 1000 : 0;
        await new Promise((r) => setTimeout(r, Math.max(hint, backoffDelay(attempt, this.host.backoff))));
      }
    }
  }

  /** A room's write over HTTP, as the room's own SSE peer `conn`. */
  roomOp(op: PubOp | StateOp | WillOp, conn: string): Promise<AckEvent> {
    const room = encodeURIComponent(op.room);
    const query = (params: Record<string, unknown>) => {
      const q = new URLSearchParams({ conn });
      for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
      return `?${q.toString()}`;
    };
    switch (op.op) {
      case "pub": {
        const key = op.idempotency_key;
        if (op.retain) {
          const path = `/rooms/${room}/topics/${String(op.topic).split("/").map(encodeURIComponent).join("/")}`;
          if (op.data === null) return this.keyed(() => this.call("DELETE", path + query({}), undefined, key));
          return this.keyed(() => this.call("PUT", path + query({ ttl: op.ttl }), op.data, key));
        }
        return this.keyed(() => this.call("POST", `/rooms/${room}` + query({ type: op.type, to: op.to, topic: op.topic }), op.data ?? null, key));
      }
      case "state":
        return this.call("PUT", `/rooms/${room}/state` + query({}), op.state ?? null);
      case "will":
        if (op.topic) return this.call("PUT", `/rooms/${room}/will` + query({ topic: op.topic, after: op.after }), op.data ?? null);
        return this.call("DELETE", `/rooms/${room}/will` + query({}));
    }
  }

  /** Runs a step bounded by `AbortSignal.timeout`, its timeout as a
   * `RelayError` of code `timeout` (the call's outcome is unknown). */
  private async timed<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (e) {
      if ((e as Error)?.name === "TimeoutError") {
        throw new RelayError("timeout", `no answer from the relay within ${this.host.ackTimeout()} ms: the op may or may not have been applied`);
      }
      throw e;
    }
  }
}
