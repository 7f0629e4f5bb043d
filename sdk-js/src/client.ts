import { Emitter } from "./emitter.js";
import { ClosedError, RelayError, relayError, unreachable } from "./errors.js";
import { Outbox } from "./outbox.js";
import type { AckEvent, Op, RelayEvent, WelcomeEvent } from "./protocol.js";
import { Reconnect } from "./reconnect.js";
import { Room } from "./room.js";
import { HttpApi } from "./transport/http.js";
import { SseTransport } from "./transport/sse.js";
import { OPEN, type WebSocketLike, openSocket, websocketUrl } from "./transport/websocket.js";
import { parseEvent } from "./wire.js";
import type { ClientEvents, ConnectionState, EdgewireOptions } from "./options.js";

export { ClosedError, RelayError } from "./errors.js";
export type { ClientEvents, ConnectionState, EdgewireOptions } from "./options.js";
export type { EventSourceConstructor, EventSourceLike } from "./transport/sse.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport/websocket.js";

/** A fresh idempotency key (`randomUUID` needs a secure context; elsewhere
 * time and 2 × 52 random bits are unique enough for one client's writes). */
function newKey(): string {
  return globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2) + Date.now().toString(36) + Math.random().toString(36).slice(2);
}

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
  private readonly outbox: Outbox;
  private readonly rooms = new Map<string, Room<unknown, unknown>>();
  private ws?: WebSocketLike;
  private welcomed = false;
  private token?: string;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private probeTimer?: ReturnType<typeof setTimeout>;
  private connectTimer?: ReturnType<typeof setTimeout>;

  constructor(url: string, private readonly options: EdgewireOptions = {}) {
    super();
    this.url = websocketUrl(url);
    this.httpBase = this.url.replace(/^ws/, "http");
    this.reconnect = new Reconnect(options);
    this.outbox = new Outbox({
      isOpen: () => this.isOpen(),
      write: (text) => this.ws?.send(text),
      isStopped: () => this.stopped,
      ackTimeout: () => this.ackTimeout(),
      options,
    });
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
   * type of the room's message payloads, `State` of its presence states;
   * `since` resumes after a history id seen elsewhere (another tab). */
  join<Msg = unknown, State = unknown>(name: string, options: { state?: State; signal?: AbortSignal; since?: string } = {}): Room<Msg, State> {
    const known = this.rooms.get(name);
    // One room object per name: the types are the caller's promise.
    if (known) return known as Room<Msg, State>;
    const link = { request: (op: Op) => this.request(op), snapshot: (r: string) => this.http.snapshot(r) };
    const room = new Room<Msg, State>(name, link, (r) => this.rooms.delete(r), options.state, options.since);
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
    this.outbox.stop(new ClosedError("the client was closed"));
  }

  /** @internal Sends an op (queued while disconnected) and resolves with its
   * `ack`. A publish gets an idempotency key, so that resending it after a
   * lost connection (or retrying it over HTTP) never doubles it. */
  request(op: Op): Promise<AckEvent> {
    if (this.stopped) return Promise.reject(new Error("the client was closed"));
    if (op.op === "pub" && op.idempotency_key === undefined) op = { ...op, idempotency_key: newKey() };
    if (this.transport === "sse") return this.sse.send(op);
    return this.outbox.send(op);
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
        if (event.room != null) break; // a room's welcome, for the room
        clearTimeout(this.connectTimer);
        this.welcomed = true;
        this.reconnect.opened();
        this.peerId = event.peer.id;
        this.setState("open");
        for (const room of this.rooms.values()) this.joinOnServer(room);
        this.outbox.flush();
        return;
      case "ack":
        if (event.ref !== undefined) this.outbox.answered(event.ref, event);
        return;
      case "error":
        if (event.ref !== undefined) return this.outbox.answered(event.ref, event);
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
    // Every other event this switch does not take is a room's.
    this.rooms.get((event as { room?: string }).room ?? "")?.apply(event);
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

  private onClose(code: number): void {
    // Publishes sent on the lost connection go again on the next one, with
    // their keys. Other ops may or may not have been applied: fail them so
    // the app decides; queued ones wait for the next connection.
    if (this.stopped) return;
    this.outbox.connectionLost(new ClosedError(`connection closed (${code})`));
    const next = this.reconnect.afterClose(code);
    if (next.kind === "stop") {
      this.stopped = true;
      this.setState("closed");
      this.outbox.stop(new ClosedError(`the relay ended the session (${code})`));
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
    for (const { op, resolve, reject } of this.outbox.drain()) this.sse.send(op).then(resolve, reject);
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
