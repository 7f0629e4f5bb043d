/** What the tabs of an origin and the holder of their shared connection (a
 * leading tab or a `SharedWorker`) say to each other. Every message is
 * structured-clone data: it crosses a `BroadcastChannel` or a `MessagePort`. */
import { RelayError } from "../errors.js";
import type { PeerInfo, StatusEvent } from "../protocol.js";
import type { RoomEvents } from "../room.js";

/** A tab's write on a room, done by the holder on its behalf. */
export type Write =
  | { m: "send"; type: string; data: unknown; to?: string }
  | { m: "state"; state: unknown }
  | { m: "retain"; topic: string; data: unknown; ttl?: number }
  | { m: "will"; topic: string; data: unknown; after?: number }
  | { m: "request"; peer: string; method: string; args: unknown; timeout?: number };

/** What a tab tells the holder about one of its rooms, so that a new holder
 * can rebuild it: presence state, resume point, will and request handlers. */
export interface HeldRoom {
  room: string;
  state?: unknown;
  since?: string;
  will?: Extract<Write, { m: "will" }>;
  handles: string[];
}

/** From a tab to the holder. */
export type ToHolder =
  | { t: "hello"; tab: string; rooms: HeldRoom[] }
  | { t: "join"; tab: string; room: HeldRoom }
  | { t: "leave"; tab: string; room: string }
  | { t: "bye"; tab: string }
  | { t: "write"; tab: string; id: string; room: string; write: Write }
  | { t: "handle"; tab: string; room: string; method: string }
  | { t: "answer"; id: string; result?: unknown; failure?: Failure }
  | { t: "token"; id: string; token?: string; failure?: Failure };

/** A room's state as the holder has it, sent to tabs that join it. */
export type Snapshot = { t: "snapshot"; room: string; self?: PeerInfo; peers: PeerInfo[]; topics: StatusEvent[]; lastId?: string };

/** From the holder to the tabs (`to` names one tab; others ignore it). */
export type FromHolder =
  | { t: "leader"; tab: string }
  | { t: "result"; to: string; id: string; value?: unknown; failure?: Failure }
  | { t: "event"; room: string; name: keyof RoomEvents; args: unknown[] }
  | Snapshot
  | { t: "call"; to: string; id: string; room: string; method: string; args: unknown; from?: PeerInfo }
  | { t: "token?"; id: string }
  | { t: "error"; failure: Failure };

/** An error as it crosses to another tab or worker: a `RelayError` keeps
 * its code and retry hint, so the app sees the same error in every tab. */
export interface Failure {
  message: string;
  code?: string;
  retryAfter?: number;
}

/** An error, ready to cross. */
export function failure(e: unknown): Failure {
  if (e instanceof RelayError) return { message: e.message.slice(e.code.length + 2), code: e.code, retryAfter: e.retryAfter };
  return { message: e instanceof Error ? e.message : String(e) };
}

/** The error a crossed `Failure` stands for. */
export function toError(f: Failure): Error {
  return f.code ? new RelayError(f.code, f.message, f.retryAfter) : new Error(f.message);
}

/** A tab's first word to a `SharedWorker` holder: what to connect to. The
 * options are the plain-data ones; a token function stays in the tabs, and
 * the worker asks them for a token (`token?`) on each connect. */
export type Config = { t: "config"; url: string; options: Record<string, unknown>; tokenFromTab: boolean };

/** A short random id for tabs, writes and calls. */
export function randomId(): string {
  return Math.random().toString(36).slice(2, 10);
}

/** The name of the Web Lock a tab holds while it lives: the holder asks for
 * it, and gets it when the tab is gone, even if the tab crashed unheard. */
export function tabLock(tab: string): string {
  return `edgewire-tab:${tab}`;
}
