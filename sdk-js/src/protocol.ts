/** Wire types of the Edgewire contract (see the relay's docs/protocol.md). */

/** A peer as presence shows it. */
export interface PeerInfo {
  /** `<sub>.<random>`, unique across relay instances. */
  id: string;
  /** The token's `sub`. */
  user: string;
  /** The token's `meta` claim. */
  meta: unknown;
  /** State the peer set with `setState`. */
  state: unknown;
}

/** An application message. */
export interface Message {
  /** Id, growing within the room. */
  id: string;
  /** Sender peer id (or `sub` for an HTTP publish without `conn`). */
  from: string;
  /** Application type. */
  type: string;
  /** Payload. */
  data: unknown;
  /** Recipient of a direct message. */
  to?: string;
  /** Topic, for a message published to a topic. */
  topic?: string;
  /** When the relay accepted it (ms since the epoch). */
  ts: number;
}

/** A topic value change. */
export interface StatusEvent {
  /** The topic. */
  topic: string;
  /** The value; `null` when cleared. */
  data: unknown;
  /** Who set it. */
  from: string;
  /** When (ms since the epoch). */
  ts: number;
  /** True when replayed from the store, false for a live update. */
  retained: boolean;
  /** Id of a live update. */
  id?: string;
}

/** Any event from the relay. */
export interface RelayEvent {
  kind: string;
  room?: string | null;
  id?: string;
  [field: string]: unknown;
}
