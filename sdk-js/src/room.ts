import { Emitter } from "./emitter.js";
import { topicMatches } from "./filter.js";
import { PeerCalls, type RequestOptions } from "./rpc.js";
import type { AckEvent, LeaveReason, Message, Op, PeerInfo, RelayEvent, StatusEvent } from "./protocol.js";


/** What a room emits; `Msg` is its messages' payload type, `State` its
 * peers' presence state type. */
export type RoomEvents<Msg = unknown, State = unknown> = {
  /** A message (broadcast or direct to you). */
  message: [Message<Msg>];
  /** A peer joined. */
  join: [PeerInfo<State>];
  /** A peer left (`closed`, `timeout`, `replaced`, `expired`). */
  leave: [PeerInfo<State>, LeaveReason];
  /** A peer changed its presence state (your own `self` included). */
  state: [PeerInfo<State>];
  /** A topic value changed or was replayed. */
  status: [StatusEvent];
  /** The relay could not replay what was missed: peers and topics were rebuilt. */
  reset: [];
};

/** The client side a room talks through. */
export interface RoomLink {
  /** Sends an op and resolves with its `ack`. */
  request(op: Op): Promise<AckEvent>;
  /** Reads the room's presence and retained values over HTTP (`GET /rooms/{room}`). */
  snapshot(room: string): Promise<RoomSnapshot>;
}

/** A room as `GET /rooms/{room}` answers it. */
export interface RoomSnapshot {
  peers: PeerInfo[];
  topics: Record<string, { topic: string; data: unknown; ts: number; from: string }>;
}

export type { RequestOptions } from "./rpc.js";

/** One joined room: presence, messages, topics and peer requests. `Msg` is
 * the type of its messages' payloads, `State` of its peers' presence state
 * (both unchecked at run time: they say what the app sends). */
export class Room<Msg = unknown, State = unknown> extends Emitter<RoomEvents<Msg, State>> {
  /** The room's name. */
  readonly name: string;
  /** Resolves when the relay has welcomed this client into the room. */
  readonly ready: Promise<void>;
  /** The other peers present, by id. */
  readonly peers = new Map<string, PeerInfo<State>>();
  /** Current retained topic values, by topic. */
  readonly topics = new Map<string, StatusEvent>();

  private me?: PeerInfo<State>;
  private last?: string;
  /** Presence state to (re)announce after each join. */
  private state?: State;
  /** The will to re-declare after each join (a will belongs to a connection). */
  private willOp?: Op;

  private markReady!: () => void;
  private readonly calls = new PeerCalls<State>((type, data, to) => this.publish(type, data, to));
  private left = false;

  /** @internal Made by `Edgewire.join`. */
  constructor(name: string, private readonly link: RoomLink, private readonly onLeave: (name: string) => void, state?: State, since?: string) {
    super();
    this.name = name;
    this.state = state;
    this.last = since;
    this.ready = new Promise((resolve) => (this.markReady = resolve));
  }

  /** This client's own peer entry (after `ready`). */
  get self(): PeerInfo<State> | undefined {
    return this.me;
  }

  /** The last history id seen: where a reconnect resumes. */
  get lastId(): string | undefined {
    return this.last;
  }

  /** @internal The ops that re-establish this client in the room after
   * each (re)join: its presence state and its will. */
  rejoinOps(): Op[] {
    const ops: Op[] = [];
    if (this.state !== undefined) ops.push({ op: "state", room: this.name, state: this.state });
    if (this.willOp) ops.push(this.willOp);
    return ops;
  }

  /** Broadcasts a message (or sends it to one peer with `to`); resolves with its id. */
  async send(type: string, data: Msg, options: { to?: string } = {}): Promise<string> {
    return this.publish(type, data, options.to);
  }

  private async publish(type: string, data: unknown, to?: string): Promise<string> {
    // `data` is required by the relay; `undefined` (which JSON drops) is sent as null.
    const ack = await this.link.request({ op: "pub", room: this.name, type, data: data ?? null, to });
    return ack.id ?? "";
  }

  /** Sets this client's presence state, seen by every peer. */
  async setState(state: State): Promise<void> {
    this.state = state;
    await this.link.request({ op: "state", room: this.name, state });
  }

  /** Stores `data` as the topic's retained value (needs the `retain` right). */
  async retain(topic: string, data: unknown, options: { ttl?: number } = {}): Promise<string> {
    const ack = await this.link.request({ op: "pub", room: this.name, topic, retain: true, data: data ?? null, ttl: options.ttl });
    return ack.id ?? "";
  }

  /** Clears a topic's retained value. */
  async clear(topic: string): Promise<void> {
    await this.link.request({ op: "pub", room: this.name, topic, retain: true, data: null });
  }

  /** Sets the value the relay stores on `topic` if this connection ends without
   * leaving (after `after` seconds, unless the same user is back by then). */
  async will(topic: string, data: unknown, options: { after?: number } = {}): Promise<void> {
    this.willOp = { op: "will", room: this.name, topic, data, after: options.after };
    await this.link.request(this.willOp);
  }

  /** Calls `listener` with every current value matching `filter`, then with
   * every change; returns a function that stops it. */
  watch(filter: string, listener: (event: StatusEvent) => void): () => void {
    for (const value of this.topics.values()) {
      if (topicMatches(filter, value.topic)) listener(value);
    }
    return this.on("status", (event) => {
      if (topicMatches(filter, event.topic)) listener(event);
    });
  }

  /** Answers requests for `method` from other peers with `handler`'s result. */
  handle(method: string, handler: (args: unknown, from: PeerInfo<State> | undefined) => unknown): void {
    this.calls.handle(method, handler);
  }

  /** Calls `method` on peer `peer` and resolves with its answer; fails on
   * timeout, on an error from the peer, when the peer leaves, or when
   * `options.signal` aborts. */
  request(peer: string, method: string, args?: unknown, options: RequestOptions = {}): Promise<unknown> {
    return this.calls.call(peer, method, args, options);
  }

  /** The room's messages as an async iterator: `for await (const m of
   * room.messages({ signal }))`. See [`Emitter.iterate`] for its bound. */
  messages(options: { signal?: AbortSignal; buffer?: number } = {}): AsyncIterableIterator<Message<Msg>> {
    return this.iterate("message", options);
  }

  /** Leaves the room (a clean leave: wills do not fire). */
  async leave(): Promise<void> {
    if (this.left) return;
    this.left = true;
    this.onLeave(this.name);
    await this.link.request({ op: "leave", room: this.name }).catch(() => undefined);
  }

  /** @internal Applies an event addressed to this room. */
  apply(event: RelayEvent): void {
    // History events at or before the last one seen were already delivered
    // (a resume that overlaps, or two transports during an upgrade).
    const historyId = event.kind === "message" && !event.to ? event.id : event.kind === "status" ? event.id : undefined;
    if (historyId !== undefined && this.last !== undefined && !idAfter(historyId, this.last)) return;
    switch (event.kind) {
      case "reset":
        this.peers.clear();
        this.topics.clear();
        this.last = undefined;
        this.emit("reset");
        // Mid-stream, the relay lost events and no welcome follows: rebuild
        // presence and topics from a fresh snapshot.
        if (event.reason === "events_lost") void this.resync();
        return;
      case "welcome": {
        // Peer states are whatever peers set: the app's `State`, unchecked.
        this.me = event.peer as PeerInfo<State>;
        this.peers.clear();
        for (const p of event.peers ?? []) this.peers.set(p.id, p as PeerInfo<State>);
        if (this.last === undefined && typeof event.last_id === "string") this.last = event.last_id;
        this.markReady();
        return;
      }
      case "presence":
        for (const change of event.events) this.apply(change);
        return;
      case "join": {
        const peer = event.peer as PeerInfo<State>;
        // Yourself, or a peer your welcome already had (a coalesced batch may overlap it).
        if (peer.id === this.me?.id || this.peers.has(peer.id)) return;
        this.peers.set(peer.id, peer);
        this.emit("join", peer);
        return;
      }
      case "leave": {
        const id = event.peer.id;
        const peer = this.peers.get(id);
        if (!peer) return; // Not a peer we knew (for example our own previous connection).
        this.peers.delete(id);
        this.calls.left(id);
        this.emit("leave", peer, event.reason ?? "closed");
        return;
      }
      case "state": {
        const id = event.peer.id;
        const peer = this.peers.get(id) ?? (this.me?.id === id ? this.me : undefined);
        // Your own state, echoed by the relay, is emitted too, so a page that
        // renders presence from `state` shows your own entry as you set it.
        if (peer) {
          peer.state = event.state as State;
          this.emit("state", peer);
        }
        return;
      }
      case "status": {
        const { kind: _kind, room: _room, ...status } = event;
        if (status.id) this.last = status.id;
        if (status.data === null) this.topics.delete(status.topic);
        else this.topics.set(status.topic, status);
        this.emit("status", status);
        return;
      }
      case "message": {
        const { kind: _kind, room: _room, ...message } = event;
        if (!message.to) this.last = message.id;
        if (this.calls.received(message, this.peers.get(message.from))) return;
        this.emit("message", message as Message<Msg>);
        return;
      }
      default:
        return;
    }
  }

  /** Replaces presence and topics with the room as the relay now holds it. */
  private async resync(): Promise<void> {
    let snapshot: RoomSnapshot;
    try {
      snapshot = await this.link.snapshot(this.name);
    } catch {
      return; // The next reconnect's welcome rebuilds presence.
    }
    if (this.left) return;
    for (const peer of snapshot.peers) {
      if (peer.id === this.me?.id || this.peers.has(peer.id)) continue;
      const known = peer as PeerInfo<State>;
      this.peers.set(peer.id, known);
      this.emit("join", known);
    }
    for (const value of Object.values(snapshot.topics)) {
      if (this.topics.has(value.topic)) continue;
      const status: StatusEvent = { retained: true, ...value };
      this.topics.set(value.topic, status);
      this.emit("status", status);
    }
  }
}

/** True when event id `a` (`<ms>-<seq>`) comes after `b`. */
export function idAfter(a: string, b: string): boolean {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am > bm || (am === bm && as > bs);
}
