/** Edgewire: rooms, presence, direct messages, request/response and retained
 * topics for browser peer apps, over an Edgewire relay. */
export { backoffDelay } from "./backoff.js";
export { ClosedError, Edgewire, RelayError } from "./client.js";
export type { ClientEvents, ConnectionState, EdgewireOptions, EventSourceConstructor, EventSourceLike, WebSocketConstructor, WebSocketLike } from "./client.js";
export { CLOSE_CODES, ERROR_CODES, closePolicy } from "./codes.js";
export type { ClosePolicy } from "./codes.js";
export { topicMatches } from "./filter.js";
export type {
  AckEvent,
  ErrorEvent,
  ExpiringEvent,
  JoinEvent,
  JoinOp,
  LeaveEvent,
  LeaveOp,
  LeaveReason,
  Message,
  MessageEvent,
  Op,
  PeerInfo,
  PingOp,
  PongEvent,
  PresenceEvent,
  PubOp,
  RefreshOp,
  RelayEvent,
  RelayEventKind,
  ResetEvent,
  StateEvent,
  StateOp,
  StatusEvent,
  StatusWireEvent,
  WelcomeEvent,
  WillOp,
} from "./protocol.js";
export { Room } from "./room.js";
export type { RequestOptions, RoomEvents, RoomSnapshot } from "./room.js";
