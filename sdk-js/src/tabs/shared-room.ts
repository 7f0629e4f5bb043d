/** A room as one tab sees it through the connection the tabs share. */
import { Emitter } from "../emitter.js";
import { topicMatches } from "../filter.js";
import type { Message, PeerInfo, StatusEvent } from "../protocol.js";
import { type RequestOptions, type RoomEvents, idAfter } from "../room.js";
import type { HeldRoom, Snapshot, Write } from "./said.js";

/** What a shared room needs from its tab. */
export interface SharedRoomLink {
  /** Has the holder do a write; resolves with its result. */
  write(room: string, write: Write, signal?: AbortSignal): Promise<unknown>;
  /** Tells the holder this tab answers `method` in `room`. */
  handle(room: string, method: string): void;
  /** This tab leaves the room. */
  leave(room: string): void;
}

/** A room as one tab sees it through the shared connection: the same reads,
 * writes and events as a `Room`, done by whichever end holds the connection. */
export class SharedRoom<Msg = unknown, State = unknown> extends Emitter<RoomEvents<Msg, State>> {
  /** The others present (the browser itself is `self`). */
  readonly peers = new Map<string, PeerInfo<State>>();
  /** Current retained values, by topic. */
  readonly topics = new Map<string, StatusEvent>();
  /** Resolves once the room's state has reached this tab. */
  readonly ready: Promise<void>;
  private me?: PeerInfo<State>;
  private last?: string;
  private state?: State;
  private willWrite?: Extract<Write, { m: "will" }>;
  private readonly handlers = new Map<string, (args: unknown, from: PeerInfo<State> | undefined) => unknown>();
  private markReady!: () => void;

  /** @internal Made by `SharedClient.join`. */
  constructor(
    readonly name: string,
    private readonly link: SharedRoomLink,
    state?: State,
  ) {
    super();
    this.state = state;
    this.ready = new Promise((resolve) => (this.markReady = resolve));
  }

  /** The browser's peer entry (one per browser, whichever end holds the connection). */
  get self(): PeerInfo<State> | undefined {
    return this.me;
  }

  /** The last history id this tab saw. */
  get lastId(): string | undefined {
    return this.last;
  }

  /** Broadcasts a message (or sends it to one peer); resolves with its id. */
  async send(type: string, data: Msg, options: { to?: string } = {}): Promise<string> {
    return (await this.link.write(this.name, { m: "send", type, data, to: options.to })) as string;
  }

  /** Sets the browser's presence state in the room (the last tab to set it wins). */
  async setState(state: State): Promise<void> {
    this.state = state;
    await this.link.write(this.name, { m: "state", state });
  }

  /** Stores a topic's retained value. */
  async retain(topic: string, data: unknown, options: { ttl?: number } = {}): Promise<string> {
    return ((await this.link.write(this.name, { m: "retain", topic, data: data ?? null, ttl: options.ttl })) as string | undefined) ?? "";
  }

  /** Clears a topic's retained value. */
  async clear(topic: string): Promise<void> {
    await this.link.write(this.name, { m: "retain", topic, data: null });
  }

  /** Sets the value stored on `topic` if the browser's connection ends without leaving. */
  async will(topic: string, data: unknown, options: { after?: number } = {}): Promise<void> {
    this.willWrite = { m: "will", topic, data, after: options.after };
    await this.link.write(this.name, this.willWrite);
  }

  /** Calls `listener` with every current value matching `filter`, then every change. */
  watch(filter: string, listener: (event: StatusEvent) => void): () => void {
    for (const value of this.topics.values()) if (topicMatches(filter, value.topic)) listener(value);
    return this.on("status", (event) => {
      if (topicMatches(filter, event.topic)) listener(event);
    });
  }

  /** Answers other peers' requests for `method` in this tab. */
  handle(method: string, handler: (args: unknown, from: PeerInfo<State> | undefined) => unknown): void {
    this.handlers.set(method, handler);
    this.link.handle(this.name, method);
  }

  /** Calls `method` on `peer`; see `Room.request`. */
  async request(peer: string, method: string, args?: unknown, options: RequestOptions = {}): Promise<unknown> {
    return this.link.write(this.name, { m: "request", peer, method, args, timeout: options.timeout }, options.signal);
  }

  /** The room's messages as an async iterator (see `Room.messages`). */
  messages(options: { signal?: AbortSignal; buffer?: number } = {}): AsyncIterableIterator<Message<Msg>> {
    return this.iterate("message", options);
  }

  /** Leaves the room for this tab; the browser leaves it when no tab holds it. */
  leave(): void {
    this.link.leave(this.name);
  }

  /** @internal What a new holder needs to rebuild this room for this tab. */
  held(): HeldRoom {
    return { room: this.name, state: this.state, since: this.last, will: this.willWrite, handles: [...this.handlers.keys()] };
  }

  /** @internal Runs this tab's handler for a peer's request. */
  async answer(method: string, args: unknown, from: PeerInfo | undefined): Promise<unknown> {
    const handler = this.handlers.get(method);
    if (!handler) throw new Error(`no handler for ${method}`);
    return handler(args, from as PeerInfo<State> | undefined);
  }

  /** @internal The room's state as the holder has it. */
  snapshot(said: Snapshot): void {
    this.me = said.self as PeerInfo<State> | undefined;
    this.peers.clear();
    for (const p of said.peers) this.peers.set(p.id, p as PeerInfo<State>);
    this.topics.clear();
    for (const v of said.topics) this.topics.set(v.topic, v);
    if (said.lastId && (!this.last || idAfter(said.lastId, this.last))) this.last = said.lastId;
    this.markReady();
  }

  /** @internal A room event the holder relayed. */
  event(name: keyof RoomEvents, args: unknown[]): void {
    switch (name) {
      case "message": {
        const m = args[0] as Message<Msg>;
        if (!m.to) {
          // Once: a new holder resumes from the last id and may replay.
          if (this.last && !idAfter(m.id, this.last)) return;
          this.last = m.id;
        }
        this.emit("message", m);
        return;
      }
      case "status": {
        const s = args[0] as StatusEvent;
        if (s.id) {
          if (this.last && !idAfter(s.id, this.last)) return;
          this.last = s.id;
        }
        if (s.data === null) this.topics.delete(s.topic);
        else this.topics.set(s.topic, s);
        this.emit("status", s);
        return;
      }
      case "join": {
        const p = args[0] as PeerInfo<State>;
        if (p.id === this.me?.id) return;
        this.peers.set(p.id, p);
        this.emit("join", p);
        return;
      }
      case "leave": {
        const p = args[0] as PeerInfo<State>;
        if (!this.peers.delete(p.id)) return;
        this.emit("leave", p, args[1] as RoomEvents["leave"][1]);
        return;
      }
      case "state": {
        const p = args[0] as PeerInfo<State>;
        if (p.id === this.me?.id) this.me = p;
        else this.peers.set(p.id, p);
        this.emit("state", p);
        return;
      }
      case "reset":
        this.emit("reset");
        return;
    }
  }
}
