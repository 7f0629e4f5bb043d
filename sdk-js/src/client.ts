import { backoffDelay } from "./backoff.js";
import { closePolicy } from "./codes.js";
import { Emitter } from "./emitter.js";
import type { RelayEvent } from "./protocol.js";
import { Room } from "./room.js";

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

/** Options of an [[Edgewire]] client. */
export interface EdgewireOptions {
  /** A token, or a function called on every (re)connect that returns one. */
  token?: string | (() => string | Promise<string>);
  /** WebSocket implementation (default: the global one). */
  WebSocket?: WebSocketConstructor;
  /** Backoff bounds for reconnecting (default 500 ms base, 30 s cap). */
  backoff?: { baseMs?: number; capMs?: number };
  /** A connection must stay up this long before the backoff resets (default 5 s). */
  minUptimeMs?: number;
  /** Ops queued while disconnected before new ones are refused (default 1000). */
  maxQueue?: number;
}

/** What the client emits. */
export type ClientEvents = {
  /** The connection state changed. */
  state: [ConnectionState];
  /** The relay refused or ended the session for good (4403, 4409, 1008) or an op failed without a caller. */
  error: [Error];
};

/** An error answered by the relay. */
export class RelayError extends Error {
  /** The contract's error code (`forbidden`, `rate_limited`, ...). */
  readonly code: string;
  /** Seconds to wait before retrying, when given. */
  readonly retryAfter?: number;

  constructor(code: string, message: string, retryAfter?: number) {
    super(`${code}: ${message}`);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

type Waiting = { resolve: (ev: RelayEvent) => void; reject: (e: Error) => void };

const OPEN = 1;

/** A connection to an Edgewire relay: one WebSocket for every joined room,
 * with reconnect, resume and token refresh. */
export class Edgewire extends Emitter<ClientEvents> {
  /** The connection state. */
  state: ConnectionState = "connecting";
  /** The transport in use. */
  transport: "websocket" | "sse" = "websocket";
  /** This connection's peer id (after the first welcome). */
  peerId?: string;

  private readonly url: string;
  private readonly rooms = new Map<string, Room>();
  private readonly waiting = new Map<number, Waiting>();
  private readonly queue: { text: string; ref: number }[] = [];
  private ws?: WebSocketLike;
  private nextRef = 1;
  private attempt = 0;
  private openedAt = 0;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;

  constructor(url: string, private readonly options: EdgewireOptions = {}) {
    super();
    this.url = websocketUrl(url);
    void this.connect();
  }

  /** Joins a room (once; later calls return the same room). */
  join(name: string, options: { state?: unknown } = {}): Room {
    let room = this.rooms.get(name);
    if (room) return room;
    room = new Room(name, { request: (op) => this.request(op) }, (r) => this.rooms.delete(r.name));
    room.initialState = options.state;
    this.rooms.set(name, room);
    if (this.isOpen()) this.joinOnServer(room);
    return room;
  }

  /** Closes the connection for good. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.ws?.close(1000, "client closed");
    this.setState("closed");
    this.failWaiting(new Error("the client was closed"));
  }

  /** @internal Sends an op (queued while disconnected) and resolves with its `ack`. */
  request(op: Record<string, unknown>): Promise<RelayEvent> {
    if (this.stopped) return Promise.reject(new Error("the client was closed"));
    const ref = this.nextRef++;
    const text = JSON.stringify({ ...op, ref });
    return new Promise((resolve, reject) => {
      if (this.isOpen()) {
        this.waiting.set(ref, { resolve, reject });
        this.ws?.send(text);
        return;
      }
      if (this.queue.length >= (this.options.maxQueue ?? 1000)) {
        reject(new Error("disconnected and the send queue is full"));
        return;
      }
      this.waiting.set(ref, { resolve, reject });
      this.queue.push({ text, ref });
    });
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
    return typeof t === "function" ? await t() : t;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let token: string | undefined;
    try {
      token = await this.token();
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
      return this.scheduleReconnect();
    }
    const Ctor = this.options.WebSocket ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Ctor) throw new Error("no WebSocket implementation: pass options.WebSocket");
    const protocols = token ? ["edgewire", `bearer.${token}`] : ["edgewire"];
    const ws = new Ctor(`${this.url}/rooms`, protocols);
    this.ws = ws;
    ws.onmessage = (ev) => {
      try {
        this.onEvent(JSON.parse(String(ev.data)) as RelayEvent);
      } catch {
        // A frame that is not JSON is not from a relay; ignore it.
      }
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.onClose(ev.code);
    };
    ws.onerror = () => undefined;
  }

  private onEvent(event: RelayEvent): void {
    if (event.kind === "welcome" && (event.room === null || event.room === undefined)) {
      this.peerId = (event.peer as { id: string }).id;
      this.openedAt = Date.now();
      this.setState("open");
      for (const room of this.rooms.values()) this.joinOnServer(room);
      for (const { text } of this.queue.splice(0)) this.ws?.send(text);
      return;
    }
    if (event.kind === "ack" || (event.kind === "error" && event.ref !== undefined)) {
      const ref = Number(event.ref);
      const waiting = this.waiting.get(ref);
      this.waiting.delete(ref);
      if (event.kind === "ack") waiting?.resolve(event);
      else waiting?.reject(new RelayError(String(event.code), String(event.message), event.retry_after as number | undefined));
      return;
    }
    if (event.kind === "expiring") {
      void this.refresh();
      return;
    }
    if (event.kind === "error") {
      this.emit("error", new RelayError(String(event.code), String(event.message), event.retry_after as number | undefined));
      return;
    }
    if (typeof event.room === "string") this.rooms.get(event.room)?.apply(event);
  }

  private joinOnServer(room: Room): void {
    const op: Record<string, unknown> = { op: "join", room: room.name };
    if (room.lastId) op.since = room.lastId;
    this.request(op)
      .then(() => (room.initialState !== undefined ? this.request({ op: "state", room: room.name, state: room.initialState }) : undefined))
      .catch((e: Error) => this.emit("error", e));
  }

  private async refresh(): Promise<void> {
    try {
      const token = await this.token();
      if (token) await this.request({ op: "refresh", token });
    } catch (e) {
      this.emit("error", e instanceof Error ? e : new Error(String(e)));
    }
  }

  private failWaiting(error: Error): void {
    const queued = new Set(this.queue.map((q) => q.ref));
    for (const [ref, waiting] of this.waiting) {
      if (!queued.has(ref) || this.stopped) {
        this.waiting.delete(ref);
        waiting.reject(error);
      }
    }
    if (this.stopped) this.queue.length = 0;
  }

  private onClose(code: number): void {
    // Ops sent on the lost connection may or may not have been applied: fail
    // them so the app decides; queued ones wait for the next connection.
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
    if (policy === "refresh-token" && this.attempt === 0) {
      this.attempt++;
      this.setState("reconnecting");
      void this.connect();
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.setState("reconnecting");
    const delay = backoffDelay(this.attempt++, this.options.backoff);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }
}

/** `http(s)://` or a relative URL to `ws(s)://`, without a trailing slash. */
function websocketUrl(url: string): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const absolute = new URL(url, base ?? "http://localhost/");
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : absolute.protocol === "http:" ? "ws:" : absolute.protocol;
  return absolute.toString().replace(/\/+$/, "");
}
