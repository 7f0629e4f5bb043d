/** The fallback transport: one Server-Sent Events stream per joined room
 * (read with fetch, or with EventSource where fetch cannot stream), and
 * every op over HTTP as that stream's peer (`conn`). */
import { backoffDelay } from "../backoff.js";
import { RelayError, relayError, unreachable } from "../errors.js";
import type { AckEvent, Op } from "../protocol.js";
import type { Room } from "../room.js";
import { parseEvent } from "../wire.js";
import { readSse } from "./event-stream.js";
import type { HttpApi } from "./http.js";

/** An EventSource constructor (the browser's, or an injected one). */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** The part of an EventSource the client uses. */
export interface EventSourceLike {
  addEventListener(type: string, listener: (ev: { data: string }) => void): void;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

/** Event kinds a room's stream carries. */
const STREAM_KINDS = ["welcome", "message", "status", "join", "leave", "state", "presence", "reset", "expiring", "error"];

/** One room's stream. */
type Stream = { abort: AbortController; conn?: string; waiters: ((conn: string) => void)[]; attempt: number };

/** What the SSE transport needs from the client. */
export interface SseHost {
  readonly httpBase: string;
  readonly http: HttpApi;
  readonly options: {
    fetch?: typeof fetch;
    EventSource?: EventSourceConstructor;
    sseReader?: "fetch" | "eventsource";
    backoff?: { baseMs?: number; capMs?: number };
    maxQueue?: number;
  };
  /** A fresh token (from the provider). */
  token(): Promise<string | undefined>;
  fetcher(): typeof fetch;
  isStopped(): boolean;
  /** A room's stream was welcomed as peer `conn`. */
  welcomed(room: Room<unknown, unknown>, conn: string): void;
  /** A stream is down and being retried. */
  reconnecting(): void;
  /** The relay says the token ends soon. */
  expiring(): void;
  /** An error for the app (and the relay's retry hint). */
  report(error: Error, retryAfterSeconds?: number): void;
  /** The room of this name, while joined. */
  room(name: string): Room<unknown, unknown> | undefined;
}

/** The streams of the joined rooms, and ops over HTTP through them. */
export class SseTransport {
  private readonly streams = new Map<string, Stream>();

  constructor(private readonly host: SseHost) {}

  /** Opens (and keeps open, resuming after drops) the stream of one room. */
  open(room: Room<unknown, unknown>): void {
    if (this.streams.has(room.name)) return;
    const stream: Stream = { abort: new AbortController(), waiters: [], attempt: 0 };
    this.streams.set(room.name, stream);
    const live = () => !this.host.isStopped() && this.streams.get(room.name) === stream && !stream.abort.signal.aborted;
    if (this.useEventSource()) return this.openEventSource(room, stream, live);
    void this.readWithFetch(room, stream, live);
  }

  /** An op over HTTP: a room's as its stream's peer. */
  async send(op: Op): Promise<AckEvent> {
    switch (op.op) {
      case "ping":
        return { kind: "ack" };
      case "refresh": {
        for (const [name, s] of this.streams) {
          if (s.conn) await this.host.http.call("POST", `/rooms/${encodeURIComponent(name)}/refresh?conn=${encodeURIComponent(s.conn)}`);
        }
        return { kind: "ack" };
      }
      case "join": {
        const room = this.host.room(op.room);
        if (room) this.open(room);
        await this.connOf(op.room);
        return { kind: "ack" };
      }
      case "leave": {
        const stream = this.streams.get(op.room);
        this.streams.delete(op.room);
        // A clean leave: cancel the will before the stream goes.
        if (stream?.conn) await this.cancelWill(op.room, stream.conn).catch(() => undefined);
        stream?.abort.abort();
        return { kind: "ack" };
      }
      default:
        return this.host.http.roomOp(op, await this.connOf(op.room));
    }
  }

  /** Ends every stream (the client closed). */
  close(): void {
    for (const stream of this.streams.values()) stream.abort.abort();
    this.streams.clear();
  }

  /** Hands the rooms to a WebSocket: each stream's will is cancelled (the
   * WebSocket session declares its own), then the stream ends. */
  handOver(): void {
    const streams = [...this.streams.entries()];
    this.streams.clear();
    for (const [name, stream] of streams) {
      const cancel = stream.conn ? this.cancelWill(name, stream.conn) : Promise.resolve();
      void cancel.catch(() => undefined).finally(() => stream.abort.abort());
    }
  }

  private cancelWill(room: string, conn: string): Promise<AckEvent> {
    return this.host.http.call("DELETE", `/rooms/${encodeURIComponent(room)}/will?conn=${encodeURIComponent(conn)}`);
  }

  /** The peer id of a room's stream, once welcomed. */
  private connOf(room: string): Promise<string> {
    const stream = this.streams.get(room);
    if (!stream) return Promise.reject(new Error(`not joined to room ${room}`));
    if (stream.conn) return Promise.resolve(stream.conn);
    if (stream.waiters.length >= (this.host.options.maxQueue ?? 1000)) return Promise.reject(new Error("disconnected and the send queue is full"));
    return new Promise((resolve) => stream.waiters.push(resolve));
  }

  /** Handles one event of a room's stream. */
  private onEvent(room: Room<unknown, unknown>, stream: Stream, data: string | undefined): void {
    const event = parseEvent(data ?? "");
    if (!event) return;
    if (event.kind === "welcome") {
      stream.conn = event.peer.id;
      stream.attempt = 0;
      room.apply(event);
      for (const waiter of stream.waiters.splice(0)) waiter(stream.conn);
      this.host.welcomed(room, stream.conn);
    } else if (event.kind === "expiring") {
      this.host.expiring();
    } else if (event.kind === "error") {
      // The relay ends a stream with an error (draining, token_expired,
      // slow_consumer): the app hears it as it would over a WebSocket.
      this.host.report(relayError(event), event.retry_after);
    } else {
      room.apply(event);
    }
  }

  private useEventSource(): boolean {
    const { sseReader } = this.host.options;
    if (sseReader) return sseReader === "eventsource";
    const canStream = typeof ReadableStream !== "undefined" && typeof Response !== "undefined" && "body" in Response.prototype;
    return !canStream;
  }

  /** The EventSource reader: the token in the URL (EventSource cannot send
   * headers), and reconnection in our hands, since a native EventSource gives
   * up for good on any non-200 answer. */
  private openEventSource(room: Room<unknown, unknown>, stream: Stream, live: () => boolean): void {
    const Ctor = this.host.options.EventSource ?? (globalThis as unknown as { EventSource?: EventSourceConstructor }).EventSource;
    if (!Ctor) throw new Error("no EventSource implementation: pass options.EventSource");
    const connectOnce = async () => {
      if (!live()) return;
      const token = await this.host.token();
      const query = new URLSearchParams();
      if (token) query.set("token", token);
      if (room.lastId) query.set("last_event_id", room.lastId);
      const source = new Ctor(`${this.host.httpBase}/rooms/${encodeURIComponent(room.name)}?${query.toString()}`);
      stream.abort.signal.addEventListener("abort", () => source.close());
      for (const kind of STREAM_KINDS) source.addEventListener(kind, (ev) => this.onEvent(room, stream, ev.data));
      source.onerror = () => {
        source.close();
        stream.conn = undefined;
        if (!live()) return;
        this.host.reconnecting();
        setTimeout(() => void connectOnce(), backoffDelay(stream.attempt++, this.host.options.backoff));
      };
    };
    void connectOnce();
  }

  /** The fetch reader: the token in a header, HTTP refusals read. */
  private async readWithFetch(room: Room<unknown, unknown>, stream: Stream, live: () => boolean): Promise<void> {
    while (live()) {
      let answered = false;
      try {
        const token = await this.host.token();
        const query = room.lastId ? `?last_event_id=${encodeURIComponent(room.lastId)}` : "";
        const headers: Record<string, string> = { accept: "text/event-stream" };
        if (token) headers.authorization = `Bearer ${token}`;
        const res = await this.host.fetcher()(`${this.host.httpBase}/rooms/${encodeURIComponent(room.name)}${query}`, { headers, signal: stream.abort.signal });
        answered = true;
        if (!res.ok || !res.body) {
          const body = (await res.json().catch(() => ({}))) as { error?: string; message?: string };
          const retry = Number(res.headers.get("retry-after")) || undefined;
          // Every refusal reaches the app (a bad token, a room it may not
          // read, a relay draining); the permanent ones end the stream.
          this.host.report(new RelayError(body.error ?? String(res.status), body.message ?? res.statusText, retry));
          if (res.status === 403 || res.status === 404 || res.status === 400) {
            this.streams.delete(room.name);
            return;
          }
        } else {
          for await (const frame of readSse(res.body)) this.onEvent(room, stream, frame.data);
        }
      } catch (e) {
        // Dropped or aborted: retry below unless aborted. A fetch that
        // failed before any answer means no relay is there.
        if (live() && !answered && (e as Error)?.name === "TypeError") this.host.report(unreachable(this.host.httpBase));
      }
      stream.conn = undefined;
      if (!live()) return;
      this.host.reconnecting();
      await new Promise((r) => setTimeout(r, backoffDelay(stream.attempt++, this.host.options.backoff)));
    }
  }
}
