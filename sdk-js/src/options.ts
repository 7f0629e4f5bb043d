/** The client's options and the events it emits. */
import type { EventSourceConstructor } from "./transport/sse.js";
import type { WebSocketConstructor } from "./transport/websocket.js";

/** The connection's state. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

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

