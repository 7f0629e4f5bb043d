import { backoffDelay } from "./backoff.js";
import { closePolicy } from "./codes.js";
import { Emitter } from "./emitter.js";
import type { AckEvent, ErrorEvent, Op, RelayEvent, WelcomeEvent } from "./protocol.js";
import { Room, type RoomSnapshot } from "./room.js";
import { readSse } from "./sse.js";

/** The connection's state. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** A WebSocket constructor: the browser's, or one injected for Node (`ws`). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The part of a WebSocket the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** An EventSource constructor (the browser's, or an injected one). */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** The part of an EventSource the client uses. */
export interface EventSourceLike {
  addEventListener(type: string, listener: (ev: { data: string }) => void): void;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

/** Answers after which a keyed write is retried: it was not done, or its outcome is unknown. */
const RETRIABLE = new Set(["backend_unavailable", "outcome_unknown", "draining", "over_capacity"]);

/** A fresh idempotency key. */
function newKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

/** Event kinds a room's stream carries. */
const STREAM_KINDS = ["welcome", "message", "status", "join", "leave", "state", "reset", "expiring", "error"];

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

/** An error answered by the relay (its contract code), or the SDK's own
 * `unreachable` when no relay answered at all. */
export class RelayError extends Error {
  /** The contract's error code (`forbidden`, `rate_limited`, ...), or `unreachable`. */
  readonly code: string;
  /** Seconds to wait before retrying, when given. */
  readonly retryAfter?: number;

  constructor(code: string, message: string, retryAfter?: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

type Waiting = { resolve: (ev: AckEvent) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

/** An op waiting for a connection: as sent (with its `ref`) and as made. */
type Queued = { op: Op; text: string; ref: number; keyed: boolean };

/** The error an `error` event carries. */
function relayError(event: ErrorEvent): RelayError {
  return new RelayError(event.code, event.message, event.retry_after);
}

/** A frame's JSON as a relay event: `undefined` for anything that is not an
 * object with a `kind` (not from a relay). */
export function parseEvent(text: string): RelayEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || typeof (value as { kind?: unknown }).kind !== "string") return undefined;
  return value as RelayEvent;
}

/** One room's SSE stream while on the fallback transport. */
type Stream = { abort: AbortController; conn?: string; waiters: ((conn: string) => void)[]; attempt: number };

const OPEN = 1;

/** A connection to an Edgewire relay: one WebSocket for every joined room
 * (or, where WebSockets are blocked, one SSE stream per room plus POST), with
 * reconnect, resume and token refresh. */
export class Edgewire extends Emitter<ClientEvents> {
  /** The connection state. */
  state: ConnectionState = "connecting";
  /** The transport in use. */
  transport: "websocket" | "sse" = "websocket";
  /** This connection's peer id (after the first welcome). */
  peerId?: string;

  private readonly url: string;
  private readonly httpBase: string;
  private readonly rooms = new Map<string, Room<unknown, unknown>>();
  private readonly waiting = new Map<number, Waiting>();
  private readonly queue: Queued[] = [];
  /** Publishes sent on the socket and not yet answered: on a lost connection
   * they go back to the queue and are sent again with the same idempotency
   * key, so the relay does each once. */
  private readonly inflight = new Map<number, Queued>();
  /** Retries made of each keyed publish the relay answered with a retriable error. */
  private readonly retries = new Map<number, number>();
  private readonly streams = new Map<string, Stream>();
  private ws?: WebSocketLike;
  private welcomed = false;
  private currentToken?: string;
  private nextRef = 1;
  private attempt = 0;
  private openedAt = 0;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private probeTimer?: ReturnType<typeof setTimeout>;
  private connectTimer?: ReturnType<typeof setTimeout>;
  /** Seconds the relay asked to wait (from the error before a 4429 close). */
  private retryAfter?: number;
  /** One immediate reconnect with a fresh token per welcomed connection (on 4401),
   * so a token that keeps failing falls back to the backoff. */
  private quickRetoken = true;

  constructor(url: string, private readonly options: EdgewireOptions = {}) {
    super();
    this.url = websocketUrl(url);
    this.httpBase = this.url.replace(/^ws/, "http");
    void this.connect();
  }

  /** Joins a room (once; later calls return the same room). `Msg` is the
   * type of the room's message payloads, `State` of its presence states. */
  join<Msg = unknown, State = unknown>(name: string, options: { state?: State; signal?: AbortSignal } = {}): Room<Msg, State> {
    const known = this.rooms.get(name);
    // One room object per name: the types are the caller's promise.
    if (known) return known as Room<Msg, State>;
    const link = { request: (op: Op) => this.request(op), snapshot: (r: string) => this.snapshot(r) };
    const room = new Room<Msg, State>(name, link, (r) => this.rooms.delete(r), options.state);
    this.rooms.set(name, room as Room<unknown, unknown>);
    if (this.transport === "sse") this.openStream(room as Room<unknown, unknown>);
    else if (this.isOpen()) this.joinOnServer(room as Room<unknown, unknown>);
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
    for (const stream of this.streams.values()) stream.abort.abort();
    this.streams.clear();
    this.setState("closed");
    this.failWaiting(new Error("the client was closed"));
  }

  /** @internal Sends an op (queued while disconnected) and resolves with its
   * `ack`. A publish gets an idempotency key, so that resending it after a
   * lost connection (or retrying it over HTTP) never doubles it. */
  request(op: Op): Promise<AckEvent> {
    if (this.stopped) return Promise.reject(new Error("the client was closed"));
    if (op.op === "pub" && op.idempotency_key === undefined) op = { ...op, idempotency_key: newKey() };
    if (this.transport === "sse") return this.viaHttp(op);
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

  private async token(): Promise<string | undefined> {
    const t = this.options.token;
    this.currentToken = typeof t === "function" ? await t() : t;
    return this.currentToken;
  }

  private openSocket(token: string | undefined): WebSocketLike {
    const Ctor = this.options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket implementation: pass options.WebSocket");
    return new Ctor(`${this.url}/rooms`, token ? ["edgewire", `bearer.${token}`] : ["edgewire"]);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let ws: WebSocketLike;
    try {
      ws = this.openSocket(await this.token());
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      return this.scheduleReconnect();
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
    this.connectTimer = setTimeout(() => {
      if (this.ws !== ws || this.welcomed) return;
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close();
      } catch {
        // Closing a socket that never opened may throw; it is gone either way.
      }
      this.emit("error", new RelayError("timeout", `no welcome from the relay at ${this.url} within ${this.options.connectTimeoutMs ?? 10_000} ms`));
      this.socketClosed(4408);
    }, this.options.connectTimeoutMs ?? 10_000);
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
        this.quickRetoken = true;
        this.peerId = event.peer.id;
        this.openedAt = Date.now();
        this.setState("open");
        for (const room of this.rooms.values()) this.joinOnServer(room);
        for (const queued of this.queue.splice(0)) this.sendNow(queued);
        return;
      case "ack":
        if (event.ref !== undefined) this.answered(event.ref, event);
        return;
      case "error":
        if (event.ref !== undefined) return this.answered(event.ref, event);
        if (typeof event.retry_after === "number") this.retryAfter = event.retry_after;
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
      .catch((e: Error) => this.emit("error", e));
  }

  /** After a (re)join: announce the presence state and re-declare the will, both of which belong to a connection. */
  private async reapply(room: Room<unknown, unknown>): Promise<void> {
    for (const op of room.rejoinOps()) await this.request(op);
  }

  private async refresh(): Promise<void> {
    try {
      const token = await this.token();
      if (!token) return;
      if (this.transport === "websocket") await this.request({ op: "refresh", token });
      else await this.viaHttp({ op: "refresh", token });
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
    this.failWaiting(new Error(`connection closed (${code})`));
    if (this.stopped) return;
    const policy = closePolicy(code);
    if (policy === "stop") {
      this.stopped = true;
      this.setState("closed");
      this.failWaiting(new Error(`the relay ended the session (${code})`));
      this.emit("error", new Error(`the relay ended the session for good (${code})`));
      return;
    }
    if (Date.now() - this.openedAt >= (this.options.minUptimeMs ?? 5000) && this.openedAt > 0) this.attempt = 0;
    this.openedAt = 0;
    if (policy === "refresh-token" && this.quickRetoken) {
      this.quickRetoken = false;
      this.setState("reconnecting");
      void this.connect();
      return;
    }
    if (policy === "retry-after" && this.retryAfter !== undefined) {
      // Rate limited: wait what the relay asked, plus jitter so clients spread.
      const delay = this.retryAfter * 1000 + backoffDelay(0, { baseMs: 1000 });
      this.retryAfter = undefined;
      this.attempt++;
      this.setState("reconnecting");
      this.retryTimer = setTimeout(() => void this.connect(), delay);
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setState("reconnecting");
    const delay = backoffDelay(this.attempt++, this.options.backoff);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  // ---- The SSE + POST fallback ----

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
      this.viaHttp(op).then(
        (ev) => waiting?.resolve(ev),
        (e: Error) => waiting?.reject(e),
      );
    }
    for (const room of this.rooms.values()) this.openStream(room);
    this.scheduleProbe();
  }

  private fetcher(): typeof fetch {
    const f = this.options.fetch ?? globalThis.fetch;
    if (!f) throw new Error("no fetch implementation: pass options.fetch");
    return f;
  }

  /** Handles one event of a room's SSE stream. */
  private onStreamEvent(room: Room<unknown, unknown>, stream: Stream, data: string | undefined): void {
    const event = parseEvent(data ?? "");
    if (!event) return;
    if (event.kind === "welcome") {
      stream.conn = event.peer.id;
      stream.attempt = 0;
      this.peerId ??= stream.conn;
      this.setState("open");
      room.apply(event);
      for (const waiter of stream.waiters.splice(0)) waiter(stream.conn);
      void this.reapply(room).catch((e: Error) => this.emit("error", e));
    } else if (event.kind === "expiring") {
      void this.refresh();
    } else if (event.kind === "error") {
      // The relay ends a stream with an error (draining, token_expired,
      // slow_consumer): the app hears it as it would over a WebSocket.
      if (typeof event.retry_after === "number") this.retryAfter = event.retry_after;
      this.emit("error", relayError(event));
    } else {
      room.apply(event);
    }
  }

  private useEventSource(): boolean {
    if (this.options.sseReader) return this.options.sseReader === "eventsource";
    const canStream = typeof ReadableStream !== "undefined" && typeof Response !== "undefined" && "body" in Response.prototype;
    return !canStream;
  }

  /** The EventSource reader: the token in the URL (EventSource cannot send
   * headers), and reconnection in our hands, since a native EventSource gives
   * up for good on any non-200 answer. */
  private openEventSource(room: Room<unknown, unknown>, stream: Stream, live: () => boolean): void {
    const Ctor = this.options.EventSource ?? (globalThis as unknown as { EventSource?: EventSourceConstructor }).EventSource;
    if (!Ctor) throw new Error("no EventSource implementation: pass options.EventSource");
    const connectOnce = async () => {
      if (!live()) return;
      const token = await this.token();
      const query = new URLSearchParams();
      if (token) query.set("token", token);
      if (room.lastId) query.set("last_event_id", room.lastId);
      const source = new Ctor(`${this.httpBase}/rooms/${encodeURIComponent(room.name)}?${query.toString()}`);
      stream.abort.signal.addEventListener("abort", () => source.close());
      for (const kind of STREAM_KINDS) source.addEventListener(kind, (ev) => this.onStreamEvent(room, stream, ev.data));
      source.onerror = () => {
        source.close();
        stream.conn = undefined;
        if (!live()) return;
        this.setState("reconnecting");
        setTimeout(() => void connectOnce(), backoffDelay(stream.attempt++, this.options.backoff));
      };
    };
    void connectOnce();
  }

  /** Opens (and keeps open, resuming after drops) the SSE stream of one room. */
  private openStream(room: Room<unknown, unknown>): void {
    if (this.streams.has(room.name)) return;
    const stream: Stream = { abort: new AbortController(), waiters: [], attempt: 0 };
    this.streams.set(room.name, stream);
    const live = () => !this.stopped && this.streams.get(room.name) === stream && !stream.abort.signal.aborted;
    if (this.useEventSource()) return this.openEventSource(room, stream, live);
    void (async () => {
      while (live()) {
        let answered = false;
        try {
          const token = await this.token();
          const query = room.lastId ? `?last_event_id=${encodeURIComponent(room.lastId)}` : "";
          const headers: Record<string, string> = { accept: "text/event-stream" };
          if (token) headers.authorization = `Bearer ${token}`;
          const res = await this.fetcher()(`${this.httpBase}/rooms/${encodeURIComponent(room.name)}${query}`, { headers, signal: stream.abort.signal });
          answered = true;
          if (!res.ok || !res.body) {
            const body = (await res.json().catch(() => ({}))) as { error?: string; message?: string };
            const retry = Number(res.headers.get("retry-after")) || undefined;
            const error = new RelayError(body.error ?? String(res.status), body.message ?? res.statusText, retry);
            // Every refusal reaches the app (a bad token, a room it may not
            // read, a relay draining); the permanent ones end the stream.
            this.emit("error", error);
            if (res.status === 403 || res.status === 404 || res.status === 400) {
              this.streams.delete(room.name);
              return;
            }
          } else {
            for await (const frame of readSse(res.body)) this.onStreamEvent(room, stream, frame.data);
          }
        } catch (e) {
          // Dropped or aborted: retry below unless aborted. A fetch that
          // failed before any answer means no relay is there.
          if (live() && !answered && (e as Error)?.name === "TypeError") this.emit("error", unreachable(this.httpBase));
        }
        stream.conn = undefined;
        if (!live()) return;
        this.setState("reconnecting");
        await new Promise((r) => setTimeout(r, backoffDelay(stream.attempt++, this.options.backoff)));
      }
    })();
  }

  /** The peer id of a room's SSE stream, once welcomed. */
  private connOf(room: string): Promise<string> {
    const stream = this.streams.get(room);
    if (!stream) return Promise.reject(new Error(`not joined to room ${room}`));
    if (stream.conn) return Promise.resolve(stream.conn);
    if (stream.waiters.length >= (this.options.maxQueue ?? 1000)) return Promise.reject(new Error("disconnected and the send queue is full"));
    return new Promise((resolve) => stream.waiters.push(resolve));
  }

  private async http(method: string, path: string, body?: unknown, key?: string): Promise<AckEvent> {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (key) headers["idempotency-key"] = key;
    const token = this.currentToken ?? (await this.token());
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await this.timed(() =>
      this.fetcher()(`${this.httpBase}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(this.ackTimeout()) }),
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

  /** Runs an HTTP step bounded by `AbortSignal.timeout`, its timeout as a
   * `RelayError` of code `timeout` (the call's outcome is unknown). */
  private async timed<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (e) {
      if ((e as Error)?.name === "TimeoutError") throw new RelayError("timeout", `no answer from the relay within ${this.ackTimeout()} ms: the call may or may not have been applied`);
      throw e;
    }
  }

  /** A room's presence and retained values, read over HTTP. */
  private async snapshot(room: string): Promise<RoomSnapshot> {
    const headers: Record<string, string> = { accept: "application/json" };
    const token = this.currentToken ?? (await this.token());
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await this.timed(() => this.fetcher()(`${this.httpBase}/rooms/${encodeURIComponent(room)}`, { headers, signal: AbortSignal.timeout(this.ackTimeout()) }));
    if (!res.ok) throw new RelayError(String(res.status), res.statusText);
    return (await res.json()) as RoomSnapshot;
  }

  /** Runs a keyed write, retrying (with the same key, so it is done once)
   * while the relay is unreachable or answers 503: a few attempts with backoff. */
  private async keyed(write: () => Promise<AckEvent>): Promise<AckEvent> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await write();
      } catch (e) {
        const retriable = e instanceof RelayError ? RETRIABLE.has(e.code) : (e as Error)?.name === "TypeError";
        if (!retriable || attempt >= 4 || this.stopped) throw e;
        const hint = e instanceof RelayError && e.retryAfter ? e.retryAfter * 1000 : 0;
        await new Promise((r) => setTimeout(r, Math.max(hint, backoffDelay(attempt, this.options.backoff))));
      }
    }
  }

  /** An op over HTTP, as the room's own SSE peer (`conn`). */
  private async viaHttp(op: Op): Promise<AckEvent> {
    switch (op.op) {
      case "ping":
        return { kind: "ack" };
      case "refresh": {
        for (const [n, s] of this.streams) {
          if (s.conn) await this.http("POST", `/rooms/${encodeURIComponent(n)}/refresh?conn=${encodeURIComponent(s.conn)}`);
        }
        return { kind: "ack" };
      }
      default:
        return this.roomViaHttp(op);
    }
  }

  /** A room's op over HTTP, as the room's own SSE peer (`conn`). */
  private async roomViaHttp(op: Exclude<Op, { op: "ping" } | { op: "refresh" }>): Promise<AckEvent> {
    const name = op.room;
    const room = encodeURIComponent(name);
    switch (op.op) {
      case "join": {
        const r = this.rooms.get(name);
        if (r) this.openStream(r);
        await this.connOf(name);
        return { kind: "ack" };
      }
      case "leave": {
        const stream = this.streams.get(name);
        this.streams.delete(name);
        // A clean leave: cancel the will before the stream goes.
        if (stream?.conn) await this.http("DELETE", `/rooms/${room}/will?conn=${encodeURIComponent(stream.conn)}`).catch(() => undefined);
        stream?.abort.abort();
        return { kind: "ack" };
      }
    }
    const conn = await this.connOf(name);
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
          if (op.data === null) return this.keyed(() => this.http("DELETE", path + query({}), undefined, key));
          return this.keyed(() => this.http("PUT", path + query({ ttl: op.ttl }), op.data, key));
        }
        return this.keyed(() => this.http("POST", `/rooms/${room}` + query({ type: op.type, to: op.to, topic: op.topic }), op.data ?? null, key));
      }
      case "state":
        return this.http("PUT", `/rooms/${room}/state` + query({}), op.state ?? null);
      case "will":
        if (op.topic) return this.http("PUT", `/rooms/${room}/will` + query({ topic: op.topic, after: op.after }), op.data ?? null);
        return this.http("DELETE", `/rooms/${room}/will` + query({}));
    }
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
      ws = this.openSocket(await this.token());
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
    const streams = [...this.streams.entries()];
    this.streams.clear();
    this.ws = ws;
    this.welcomed = true;
    this.transport = "websocket";
    this.emit("transport", "websocket");
    this.peerId = welcome.peer.id;
    this.openedAt = Date.now();
    this.attempt = 0;
    this.setState("open");
    for (const room of this.rooms.values()) this.joinOnServer(room);
    for (const [name, stream] of streams) {
      const conn = stream.conn;
      const cancelWill = conn ? this.http("DELETE", `/rooms/${encodeURIComponent(name)}/will?conn=${encodeURIComponent(conn)}`) : Promise.resolve();
      void cancelWill.catch(() => undefined).finally(() => stream.abort.abort());
    }
  }
}

/** The SDK's error for a relay that did not answer at all. */
function unreachable(url: string): RelayError {
  return new RelayError("unreachable", `cannot reach the relay at ${url}; check the URL and that it is running`);
}

/** `http(s)://` or a relative URL to `ws(s)://`, without a trailing slash. */
function websocketUrl(url: string): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const absolute = new URL(url, base ?? "http://localhost/");
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : absolute.protocol === "http:" ? "ws:" : absolute.protocol;
  return absolute.toString().replace(/\/+$/, "");
}
