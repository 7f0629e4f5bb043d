/** Wire types of the Edgewire contract (see the relay's docs/protocol.md):
 * every event the relay sends and every op a client sends, as discriminated
 * unions on `kind` and `op`. */

/** A peer as presence shows it; `State` is what peers set with `setState`. */
export interface PeerInfo<State = unknown> {
  /** `<sub>.<random>`, unique across relay instances. */
  id: string;
  /** The token's `sub`. */
  user: string;
  /** The token's `meta` claim. */
  meta: unknown;
  /** State the peer set with `setState` (`null` until it does). */
  state: State;
}

/** An application message; `Data` is its payload's type. */
export interface Message<Data = unknown> {
  /** Id, growing within the room. */
  id: string;
  /** Sender peer id (or `sub` for an HTTP publish without `conn`). */
  from: string;
  /** Application type. */
  type: string;
  /** Payload. */
  data: Data;
  /** Recipient of a direct message. */
  to?: string;
  /** Topic, for a message published to a topic. */
  topic?: string;
  /** When the relay accepted it (ms since the epoch). */
  ts: number;
}

/** A topic value change; `Data` is the value's type. */
export interface StatusEvent<Data = unknown> {
  /** The topic. */
  topic: string;
  /** The value; `null` when cleared. */
  data: Data | null;
  /** Who set it. */
  from: string;
  /** When (ms since the epoch). */
  ts: number;
  /** True when replayed from the store, false for a live update. */
  retained: boolean;
  /** Id of a live update. */
  id?: string;
}

/** Why a peer left: a clean leave, its instance or connection timed out,
 * another connection of the same peer replaced it, its token expired. */
export type LeaveReason = "closed" | "timeout" | "replaced" | "expired";

/** `welcome`: the connection (no `room`) or a room joined. */
export interface WelcomeEvent {
  kind: "welcome";
  room?: string | null;
  /** Your own entry. */
  peer: PeerInfo;
  /** The others present. */
  peers?: PeerInfo[];
  /** The room's last history id. */
  last_id?: string | null;
}

/** `message`: a broadcast or a direct message. */
export interface MessageEvent extends Message {
  kind: "message";
  room: string;
}

/** `status`: a topic's value set, replayed or cleared. */
export interface StatusWireEvent extends StatusEvent {
  kind: "status";
  room: string;
}

/** `join`: a peer joined. */
export interface JoinEvent {
  kind: "join";
  room: string;
  peer: PeerInfo;
}

/** `leave`: a peer left. */
export interface LeaveEvent {
  kind: "leave";
  room: string;
  peer: { id: string };
  reason: LeaveReason;
}

/** `state`: a peer set its presence state. */
export interface StateEvent {
  kind: "state";
  room: string;
  peer: { id: string };
  state: unknown;
}

/** `presence`: a room's `join`, `leave` and `state` events that came
 * within one coalescing window, in order (one frame instead of many). */
export interface PresenceEvent {
  kind: "presence";
  room: string;
  events: (JoinEvent | LeaveEvent | StateEvent)[];
}

/** `ack`: an op with `ref` was done (a publish's `id` with it). Over HTTP
 * the answer has no `ref`. */
export interface AckEvent {
  kind: "ack";
  ref?: number;
  id?: string;
}

/** `error`: an op failed (with its `ref`), or the connection or stream is
 * about to end (`draining`, `token_expired`, `slow_consumer`...). */
export interface ErrorEvent {
  kind: "error";
  code: string;
  message: string;
  ref?: number;
  room?: string;
  /** Seconds to wait before retrying, when the relay says. */
  retry_after?: number;
}

/** `reset`: the relay could not replay all that was missed. */
export interface ResetEvent {
  kind: "reset";
  room: string;
  reason: "history_gap" | "events_lost";
}

/** `pong`: the answer to `ping`. */
export interface PongEvent {
  kind: "pong";
  ref?: number;
}

/** `expiring`: the token ends soon; the SDK sends `refresh`. */
export interface ExpiringEvent {
  kind: "expiring";
  /** When the token expires (s since the epoch). */
  expires_at: number;
  /** Seconds left. */
  in: number;
}

/** Any event from the relay. */
export type RelayEvent =
  | WelcomeEvent
  | MessageEvent
  | StatusWireEvent
  | JoinEvent
  | LeaveEvent
  | StateEvent
  | PresenceEvent
  | AckEvent
  | ErrorEvent
  | ResetEvent
  | PongEvent
  | ExpiringEvent;

/** Every `kind` a relay event can have. */
export type RelayEventKind = RelayEvent["kind"];

/** `pub`: a message, a topic message, or a retained value. */
export interface PubOp {
  op: "pub";
  room: string;
  type?: string;
  data: unknown;
  to?: string;
  topic?: string;
  retain?: boolean;
  ttl?: number;
  idempotency_key?: string;
}

/** `join`: subscribe to a room, resuming after `since`. */
export interface JoinOp {
  op: "join";
  room: string;
  since?: string;
}

/** `leave`: unsubscribe (a clean leave: wills do not fire). */
export interface LeaveOp {
  op: "leave";
  room: string;
}

/** `state`: set your presence state in a room. */
export interface StateOp {
  op: "state";
  room: string;
  state: unknown;
}

/** `will`: a retained publish the relay makes if the connection ends
 * without `leave` (after `after` seconds). */
export interface WillOp {
  op: "will";
  room: string;
  topic: string;
  data: unknown;
  after?: number;
}

/** `refresh`: a new token for the open connection. */
export interface RefreshOp {
  op: "refresh";
  token: string;
}

/** `ping`: answered by `pong`. */
export interface PingOp {
  op: "ping";
}

/** Any op a client sends. */
export type Op = PubOp | JoinOp | LeaveOp | StateOp | WillOp | RefreshOp | PingOp;
