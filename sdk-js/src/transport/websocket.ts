/** The WebSocket side: what the client needs of a WebSocket, opening one
 * with the token in the subprotocol, and the relay's `ws(s)://` URL. */

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

/** `WebSocket.OPEN`. */
export const OPEN = 1;

/** Opens the relay's socket (`<url>/rooms`), the token riding in the
 * `bearer.<token>` subprotocol (browsers cannot set headers on one). */
export function openSocket(ctor: WebSocketConstructor | undefined, url: string, token: string | undefined): WebSocketLike {
  const Ctor = ctor ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!Ctor) throw new Error("no WebSocket implementation: pass options.WebSocket");
  return new Ctor(`${url}/rooms`, token ? ["edgewire", `bearer.${token}`] : ["edgewire"]);
}

/** `http(s)://` or a relative URL to `ws(s)://`, without a trailing slash. */
export function websocketUrl(url: string): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  const absolute = new URL(url, base ?? "http://localhost/");
  absolute.protocol = absolute.protocol === "https:" ? "wss:" : absolute.protocol === "http:" ? "ws:" : absolute.protocol;
  return absolute.toString().replace(/\/+$/, "");
}
