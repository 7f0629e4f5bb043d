import { backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { ClosedError, RETRIABLE, RelayError, relayError, unreachable } from "./errors.js";
import type { AckEvent, ErrorEvent, Op, RelayEvent, WelcomeEvent } from "./protocol.js";
import { Reconnect } from "./reconnect.js";
import { Room } from "./room.js";
import { HttpApi } from "./transport/http.js";
import { type EventSourceConstructor, SseTransport } from "./transport/sse.js";
import { OPEN, type WebSocketConstructor, type WebSocketLike, openSocket, websocketUrl } from "./transport/websocket.js";
import { parseEvent } from "./wire.js";

export { ClosedError, RelayError } from "./errors.js";
export type { EventSourceConstructor, EventSourceLike } from "./transport/sse.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport/websocket.js";

/** The connection's state. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** A fresh idempotency key. */
function newKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

/** Options of an [[Edgewire]] client. */
export interface EdgewireOptions {
  /** A token, or a function called on every (re)connect that returns one. */
  token?: string | (() => string | Promise<string>);
  /** WebSocket implementation (default: the global one). */
  WebSocket?: WebSocketConstructor;
  /** fetch implementation for the SSE + POST fallback (default: the global one). */
  fetch?: typeof fetch;
  /** EventSource implementation, used where fetch cannot stream (default: the global one). */
  EventSource?: EventSourceConstructor;
  /** How the fallback reads streams: with `fetch` (sends the token in a header
   * and reads HTTP errors), or with `EventSource` (token in the URL). Default:
   * fetch where the platform can stream a response body. */
  sseReader?: "fetch" | "eventsource";
  /** Fall back to SSE + POST when a WebSocket closes before it is welcomed (default true). */
  fallback?: boolean;
  /** While on SSE, try a WebSocket again this often, and upgrade back when it works (default 30 000 ms). */
  retryWebSocketMs?: number;
  /** Backoff bounds for reconnecting (default 500 ms base, 30 s cap). */
  backoff?: { baseMs?: number; capMs?: number };
  /** A connection must stay up this long before the backoff resets (default 5 s). */
  minUptimeMs?: number;
  /** Ops queued while disconnected before new ones are refused (default 1000). */
  maxQueue?: number;
  /** An op the relay has not answered within this many ms fails with a
   * `RelayError` of code `timeout` (default 15 000); so does an HTTP call. */
  ackTimeoutMs?: number;
  /** A WebSocket not welcomed within this many ms is given up as if it had
   * closed: the client falls back to SSE or reconnects (default 10 000). */
  connectTimeoutMs?: number;
}

/** What the client emits. */
export type ClientEvents = {
  /** The connection state changed. */
  state: [ConnectionState];
  /** The transport changed (`websocket` or `sse`). */
  transport: ["websocket" | "sse"];
  /** The relay refused or ended the session for good (4403, 4409, 1008) or an op failed without a caller. */
  error: [Error];
};

type Waiting = { resolve: (ev: AckEvent) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

/** An op waiting for the socket: as made, as sent (with its `ref`). */
type Queued = { op: Op; text: string; ref: number; keyed: boolean };

/** A connection to an Edgewire relay: one WebSocket for every joined room
 * (or, where WebSockets are blocked, one SSE stream per room plus POST), with
 * reconnect, resume and token refresh. The transports are in `transport/`;
 * this class routes ops and events between them and the rooms. */
export class Edgewire extends Emitter<ClientEvents> {
  /** The connection state. */
  state: ConnectionState = "connecting";
  /** The transport in use. */
  transport: "websocket" | "sse" = "websocket";
  /** This connection's peer id (after the first welcome). */
  peerId?: string;

  private readonly url: string;
  private readonly httpBase: string;
  private readonly http: HttpApi;
  private readonly sse: SseTransport;
  private readonly reconnect: Reconnect;
  private readonly rooms = new Map<string, Room<unknown, unknown>>();
  private readonly waiting = new Map<number, Waiting>();
  private readonly queue: Queued[] = [];
  /** Publishes sent on the socket and not yet answered: on a lost connection
   * they go back to the queue and are sent again with the same idempotency
   * key, so the relay does each once. */
  private readonly inflight = new Map<number, Queued>();
  /** Retries made of each keyed publish the relay answered with a retriable error. */
  private readonly retries = new Map<number, number>();
  private ws?: WebSocketLike;
  private welcomed = false;
  private token?: string;
  private nextRef = 1;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private probeTimer?: ReturnType<typeof setTimeout>;
  private connectTimer?: ReturnType<typeof setTimeout>;

  constructor(url: string, private readonly options: EdgewireOptions = {}) {
    super();
    this.url = websocketUrl(url);
    this.httpBase = this.url.replace(/^ws/, "http");
    this.reconnect = new Reconnect(options);
    this.http = new HttpApi({
      httpBase: this.httpBase,
      backoff: options.backoff,
      fetcher: () => this.fetcher(),
      currentToken: async () => this.token ?? (await this.freshToken()),
      ackTimeout: () => this.ackTimeout(),
      isStopped: () => this.stopped,
    });
    this.sse = new SseTransport({
      httpBase: this.httpBase,
      http: this.http,
      options,
      token: () => this.freshToken(),
      fetcher: () => this.fetcher(),
      isStopped: () => this.stopped,
      welcomed: (room, conn) => {
        this.peerId ??= conn;
        this.setState("open");
        void this.reapply(room).catch((e: Error) => this.internalFailed(e));
      },
      reconnecting: () => this.setState("reconnecting"),
      expiring: () => void this.refresh(),
      report: (error, retryAfter) => {
        if (typeof retryAfter === "number") this.reconnect.heardRetryAfter(retryAfter);
        this.emit("error", error);
      },
      room: (name) => this.rooms.get(name),
    });
    void this.connect();
  }

  /** Joins a room (once; later calls return the same room). `Msg` is the
   * type of the room's message payloads, `State` of its presence states. */
  join<Msg = unknown, State = unknown>(name: string, options: { state?: State; signal?: AbortSignal } = {}): Room<Msg, State> {
    const known = this.rooms.get(name);
    // One room object per name: the types are the caller's promise.
    if (known) return known as Room<Msg, State>;
    const link = { request: (op: Op) => this.request(op), snapshot: (r: string) => this.http.snapshot(r) };
    const room = new Room<Msg, State>(name, link, (r) => this.rooms.delete(r), options.state);
    const stored = room as Room<unknown, unknown>;
    this.rooms.set(name, stored);
    if (this.transport === "sse") this.sse.open(stored);
    else if (this.isOpen()) this.joinOnServer(stored);
    // Aborting the signal leaves the room.
    options.signal?.addEventListener("abort", () => void room.leave(), { once: true });
    if (options.signal?.aborted) void room.leave();
    return room;
  }

  /** Closes the connection for good. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.probeTimer);
    clearTimeout(this.connectTimer);
    this.ws?.close(1000, "client closed");
    this.sse.close();
    this.setState("closed");
    this.failWaiting(new ClosedError("the client was closed"));
  }

  /** @internal Sends an op (queued while disconnected) and resolves with its
   * `ack`. A publish gets an idempotency key, so that resending it after a
   * lost connection (or retrying it over HTTP) never doubles it. */
  request(op: Op): Promise<AckEvent> {
    if (this.stopped) return Promise.reject(new Error("the client was closed"));
    if (op.op === "pub" && op.idempotency_key === undefined) op = { ...op, idempotency_key: newKey() };
    if (this.transport === "sse") return this.sse.send(op);
    const ref = this.nextRef++;
    const queued: Queued = { op, text: JSON.stringify({ ...op, ref }), ref, keyed: op.op === "pub" };
    return new Promise((resolve, reject) => {
      if (!this.isOpen() && this.queue.length >= (this.options.maxQueue ?? 1000)) {
        reject(new Error("disconnected and the send queue is full"));
        return;
      }
      const timer = setTimeout(() => this.timedOut(ref), this.ackTimeout());
      this.waiting.set(ref, { resolve, reject, timer });
      if (this.isOpen()) this.sendNow(queued);
      else this.queue.push(queued);
    });
  }

  private ackTimeout(): number {
    return this.options.ackTimeoutMs ?? 15_000;
  }

  private fetcher(): typeof fetch {
    const f = this.options.fetch ?? globalThis.fetch;
    if (!f) throw new Error("no fetch implementation: pass options.fetch");
    return f;
  }

  /** A token from the option (a provider is called each time). */
  private async freshToken(): Promise<string | undefined> {
    const t = this.options.token;
    this.token = typeof t === "function" ? await t() : t;
    return this.token;
  }

  /** No answer in time: an op still queued is dropped (never sent); one
   * sent may or may not have been applied, and the error says so. */
  private timedOut(ref: number): void {
    const waiting = this.waiting.get(ref);
    if (!waiting) return;
    this.waiting.delete(ref);
    this.retries.delete(ref);
    const ms = this.ackTimeout();
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

  /** Writes an op to the open socket, remembering a (keyed) publish until it is answered. */
  private sendNow(queued: Queued): void {
    if (queued.keyed) this.inflight.set(queued.ref, queued);
    this.ws?.send(queued.text);
  }

  private isOpen(): boolean {
    return this.state === "open" && this.ws?.readyState === OPEN;
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let ws: WebSocketLike;
    try {
      ws = openSocket(this.options.WebSocket, this.url, await this.freshToken());
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      return this.after(this.reconnect.backoff());
    }
    this.ws = ws;
    this.welcomed = false;
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = (ev) => {
      if (this.ws === ws) this.socketClosed(ev.code);
    };
    ws.onerror = () => undefined;
    // A socket that neither opens nor fails (a black-holed port, a proxy
    // holding the upgrade) is given up as if it had closed.
    clearTimeout(this.connectTimer);
    const limit = this.options.connectTimeoutMs ?? 10_000;
    this.connectTimer = setTimeout(() => {
      if (this.ws !== ws || this.welcomed) return;
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close();
      } catch {
        // Closing a socket that never opened may throw; it is gone either way.
      }
      this.emit("error", new RelayError("timeout", `no welcome from the relay at ${this.url} within ${limit} ms`));
      this.socketClosed(4408);
    }, limit);
  }

  /** The current socket closed (or was given up) with `code`. */
  private socketClosed(code: number): void {
    clearTimeout(this.connectTimer);
    // A socket that never got its welcome: a proxy blocks WebSockets, or the
    // upgrade was refused. Fall back to SSE + POST (which reports an
    // unreachable relay itself).
    if (!this.welcomed && this.options.fallback !== false && code !== 4401 && code !== 4403) return this.switchToSse();
    if (!this.welcomed && code === 1006) this.emit("error", unreachable(this.url));
    this.onClose(code);
  }

  private onFrame(data: unknown): void {
    const event = parseEvent(String(data));
    if (event) this.onEvent(event);
  }

  private onEvent(event: RelayEvent): void {
    switch (event.kind) {
      case "welcome":
        if (event.room !== null && event.room !== undefined) break;
        clearTimeout(this.connectTimer);
        this.welcomed = true;
        this.reconnect.opened();
        this.peerId = event.peer.id;
        this.setState("open");
        for (const room of this.rooms.values()) this.joinOnServer(room);
        for (const queued of this.queue.splice(0)) this.sendNow(queued);
        return;
      case "ack":
        if (event.ref !== undefined) this.answered(event.ref, event);
        return;
      case "error":
        if (event.ref !== undefined) return this.answered(event.ref, event);
        if (typeof event.retry_after === "number") this.reconnect.heardRetryAfter(event.retry_after);
        this.emit("error", relayError(event));
        return;
      case "expiring":
        void this.refresh();
        return;
      case "pong":
        return;
      default:
        break;
    }
    if ("room" in event && typeof event.room === "string") this.rooms.get(event.room)?.apply(event);
  }

  /** The relay's answer to the op sent with `ref`. */
  private answered(ref: number, event: AckEvent | ErrorEvent): void {
    const sent = this.inflight.get(ref);
    this.inflight.delete(ref);
    if (event.kind === "error" && sent !== undefined && this.retryKeyed(sent, event)) return;
    this.retries.delete(ref);
    const waiting = this.waiting.get(ref);
    this.waiting.delete(ref);
    if (waiting) clearTimeout(waiting.timer);
    if (event.kind === "ack") waiting?.resolve(event);
    else waiting?.reject(relayError(event));
  }

  private joinOnServer(room: Room<unknown, unknown>): void {
    this.request({ op: "join", room: room.name, since: room.lastId })
      .then(() => this.reapply(room))
      .catch((e: Error) => this.internalFailed(e));
  }

  /** An op the SDK sent on its own (a join, a state or will re-declared)
   * failed: the app hears it, unless the client was closed meanwhile. */
  private internalFailed(error: Error): void {
    if (!this.stopped && !(error instanceof ClosedError)) this.emit("error", error);
  }

  /** After a (re)join: announce the presence state and re-declare the will, both of which belong to a connection. */
  private async reapply(room: Room<unknown, unknown>): Promise<void> {
    for (const op of room.rejoinOps()) await this.request(op);
  }

  private async refresh(): Promise<void> {
    try {
      const token = await this.freshToken();
      if (token) await this.request({ op: "refresh", token });
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** A keyed publish the relay could not do (or could not say whether it
   * did): sent again after a backoff, with the same key, a few times. */
  private retryKeyed(sent: Queued, error: ErrorEvent): boolean {
    const { ref } = sent;
    const attempt = this.retries.get(ref) ?? 0;
    if (!RETRIABLE.has(error.code) || attempt >= 4 || this.stopped) return false;
    this.retries.set(ref, attempt + 1);
    const hint = typeof error.retry_after === "number" ? error.retry_after * 1000 : 0;
    setTimeout(() => {
      if (this.stopped || !this.waiting.has(ref)) return;
      if (this.isOpen()) this.sendNow(sent);
      else this.queue.push(sent);
    }, Math.max(hint, backoffDelay(attempt, this.options.backoff)));
    return true;
  }

  /** Puts unanswered publishes back at the head of the queue, in the order sent. */
  private requeueInflight(): void {
    const sent = [...this.inflight.values()].sort((a, b) => a.ref - b.ref);
    this.inflight.clear();
    if (this.stopped) return;
    this.queue.unshift(...sent);
  }

  private failWaiting(error: Error): void {
    const queued = new Set(this.queue.map((q) => q.ref));
    for (const [ref, waiting] of this.waiting) {
      if (!queued.has(ref) || this.stopped) {
        this.waiting.delete(ref);
        clearTimeout(waiting.timer);
        waiting.reject(error);
      }
    }
    if (this.stopped) this.queue.length = 0;
  }

  private onClose(code: number): void {
    // Publishes sent on the lost connection go again on the next one, with
    // their keys. Other ops may or may not have been applied: fail them so
    // the app decides; queued ones wait for the next connection.
    this.requeueInflight();
    this.failWaiting(new ClosedError(`connection closed (${code})`));
    if (this.stopped) return;
    const next = this.reconnect.afterClose(code);
    if (next.kind === "stop") {
      this.stopped = true;
      this.setState("closed");
      this.failWaiting(new Error(`the relay ended the session (${code})`));
      this.emit("error", new Error(`the relay ended the session for good (${code})`));
      return;
    }
    this.after(next);
  }

  /** Reconnects now or after the delay the policy chose. */
  private after(next: { kind: "now" } | { kind: "after"; delayMs: number }): void {
    this.setState("reconnecting");
    if (next.kind === "now") void this.connect();
    else this.retryTimer = setTimeout(() => void this.connect(), next.delayMs);
  }

  // ---- Falling back to SSE + POST, and back to a WebSocket ----

  private switchToSse(): void {
    this.ws = undefined;
    this.transport = "sse";
    this.emit("transport", "sse");
    this.setState("reconnecting");
    // Ops queued for the socket go out over HTTP instead.
    for (const { op, ref } of this.queue.splice(0)) {
      const waiting = this.waiting.get(ref);
      this.waiting.delete(ref);
      if (waiting) clearTimeout(waiting.timer);
      this.sse.send(op).then(
        (ev) => waiting?.resolve(ev),
        (e: Error) => waiting?.reject(e),
      );
    }
    for (const room of this.rooms.values()) this.sse.open(room);
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    const every = this.options.retryWebSocketMs ?? 30_000;
    if (this.stopped || every <= 0) return;
    this.probeTimer = setTimeout(() => void this.probeWebSocket(), every);
  }

  /** While on SSE: tries a WebSocket, and moves every room back to it when it is welcomed. */
  private async probeWebSocket(): Promise<void> {
    if (this.stopped || this.transport !== "sse") return;
    let ws: WebSocketLike;
    try {
      ws = openSocket(this.options.WebSocket, this.url, await this.freshToken());
    } catch {
      return this.scheduleProbe();
    }
    let welcomed = false;
    ws.onmessage = (ev) => {
      if (welcomed) return this.onFrame(ev.data);
      const event = parseEvent(String(ev.data));
      if (event?.kind !== "welcome") return;
      welcomed = true;
      this.upgrade(ws, event);
    };
    ws.onclose = (ev) => {
      if (!welcomed) return this.scheduleProbe();
      if (this.ws === ws) this.onClose(ev.code);
    };
    ws.onerror = () => undefined;
  }

  /** Moves from SSE back to a welcomed WebSocket: rooms join it (resuming), then the streams go. */
  private upgrade(ws: WebSocketLike, welcome: WelcomeEvent): void {
    this.ws = ws;
    this.welcomed = true;
    this.transport = "websocket";
    this.emit("transport", "websocket");
    this.peerId = welcome.peer.id;
    this.reconnect.reset();
    this.setState("open");
    for (const room of this.rooms.values()) this.joinOnServer(room);
    this.sse.handOver();
  }
}
