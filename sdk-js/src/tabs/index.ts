/** One relay connection for all tabs of an origin (`edgewire/tabs`). The
 * tabs elect a leader with the Web Locks API; the leader alone holds an
 * `Edgewire` client, joins each room once for every tab that joined it, and
 * relays the rooms' events and the tabs' writes over a `BroadcastChannel`.
 * When the leader tab closes, its lock passes to another tab, which
 * connects and resumes every room from the last id the tabs saw: events are
 * neither lost nor doubled. Presence shows the browser once. */
import { Edgewire } from "../client.js";
import { Emitter } from "../emitter.js";
import { RelayError } from "../errors.js";
import type { EdgewireOptions } from "../options.js";
import type { Message, PeerInfo, StatusEvent } from "../protocol.js";
import { type Room, type RoomEvents, idAfter } from "../room.js";

/** Options of a shared connection: the client's, and the channel's name. */
export interface SharedOptions extends EdgewireOptions {
  /** Tabs sharing one connection use the same name (default: from the URL). */
  channel?: string;
}

type Write = { m: "send"; type: string; data: unknown; to?: string } | { m: "state"; state: unknown } | { m: "retain"; topic: string; data: unknown; ttl?: number };

/** What tabs say on the channel. */
type Said =
  | { t: "leader"; tab: string }
  | { t: "hello"; tab: string; rooms: { room: string; state?: unknown; since?: string }[] }
  | { t: "join"; tab: string; room: string; state?: unknown; since?: string }
  | { t: "leave"; tab: string; room: string }
  | { t: "bye"; tab: string }
  | { t: "write"; tab: string; id: string; room: string; write: Write }
  | { t: "result"; to: string; id: string; value?: string; error?: string; code?: string }
  | { t: "event"; room: string; name: keyof RoomEvents; args: unknown[] }
  | { t: "snapshot"; room: string; self?: PeerInfo; peers: PeerInfo[]; topics: StatusEvent[]; lastId?: string };

function randomId(): string {
  return Math.random().toString(36).slice(2, 10);
}

/** A room as one tab sees it through the shared connection. */
export class SharedRoom<Msg = unknown, State = unknown> extends Emitter<RoomEvents<Msg, State>> {
  /** The others present (the browser itself is `self`). */
  readonly peers = new Map<string, PeerInfo<State>>();
  /** Current retained values, by topic. */
  readonly topics = new Map<string, StatusEvent>();
  /** Resolves once the room's state has reached this tab. */
  readonly ready: Promise<void>;
  private me?: PeerInfo<State>;
  private last?: string;
  private markReady!: () => void;

  /** @internal Made by `SharedClient.join`. */
  constructor(
    readonly name: string,
    private readonly write: (w: Write) => Promise<string>,
    private readonly onLeave: () => void,
  ) {
    super();
    this.ready = new Promise((resolve) => (this.markReady = resolve));
  }

  /** The browser's peer entry (one per browser, whichever tab leads). */
  get self(): PeerInfo<State> | undefined {
    return this.me;
  }

  /** The last history id this tab saw. */
  get lastId(): string | undefined {
    return this.last;
  }

  /** Broadcasts a message (or sends it to one peer); resolves with its id. */
  send(type: string, data: Msg, options: { to?: string } = {}): Promise<string> {
    return this.write({ m: "send", type, data, to: options.to });
  }

  /** Sets the browser's presence state in the room. */
  async setState(state: State): Promise<void> {
    await this.write({ m: "state", state });
  }

  /** Stores a topic's retained value. */
  retain(topic: string, data: unknown, options: { ttl?: number } = {}): Promise<string> {
    return this.write({ m: "retain", topic, data, ttl: options.ttl });
  }

  /** Leaves the room for this tab; the browser leaves it when no tab holds it. */
  leave(): void {
    this.onLeave();
  }

  /** @internal The room's state as the leader holds it. */
  snapshot(said: Extract<Said, { t: "snapshot" }>): void {
    this.me = said.self as PeerInfo<State> | undefined;
    this.peers.clear();
    for (const p of said.peers) this.peers.set(p.id, p as PeerInfo<State>);
    this.topics.clear();
    for (const v of said.topics) this.topics.set(v.topic, v);
    if (said.lastId && (!this.last || idAfter(said.lastId, this.last))) this.last = said.lastId;
    this.markReady();
  }

  /** @internal A room event the leader relayed (or its own client emitted). */
  event(name: keyof RoomEvents, args: unknown[]): void {
    switch (name) {
      case "message": {
        const m = args[0] as Message<Msg>;
        if (!m.to) {
          // Once: a new leader resumes from the last id and may replay.
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

/** The events of a shared client. */
export type SharedEvents = {
  /** This tab became the leader (it holds the connection), or stopped being it. */
  leader: [boolean];
  /** An error of the connection (on the leader) or of a write. */
  error: [Error];
};

/** One tab's end of the connection the tabs of an origin share. */
export class SharedClient extends Emitter<SharedEvents> {
  /** This tab's id on the channel. */
  readonly tab = randomId();
  /** True while this tab holds the connection. */
  leader = false;
  private readonly channel: BroadcastChannel;
  private readonly rooms = new Map<string, { room: SharedRoom<unknown, unknown>; state?: unknown }>();
  private readonly pending = new Map<string, { resolve: (v: string) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }>();
  private client?: Edgewire;
  private led = new Map<string, Room<unknown, unknown>>();
  /** As the leader: which tabs hold each room (this one included). */
  private holders = new Map<string, Set<string>>();
  private unlock?: () => void;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly options: SharedOptions = {},
  ) {
    super();
    const name = options.channel ?? `edgewire:${new URL(url, globalThis.location?.href).toString()}`;
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (ev: MessageEvent<Said>) => this.heard(ev.data);
    // A tab that goes says so, so the leader can leave the rooms it held.
    globalThis.addEventListener?.("pagehide", () => this.close());
    // Waits in the lock's queue; holds it, as the leader, until closed.
    void navigator.locks.request(`${name}:leader`, () => this.lead());
  }

  /** Joins a room for this tab (the leader joins it once for all). */
  join<Msg = unknown, State = unknown>(name: string, options: { state?: State } = {}): SharedRoom<Msg, State> {
    const known = this.rooms.get(name);
    if (known) return known.room as SharedRoom<Msg, State>;
    const room = new SharedRoom<Msg, State>(
      name,
      (w) => this.write(name, w),
      () => this.leaveRoom(name),
    );
    this.rooms.set(name, { room: room as SharedRoom<unknown, unknown>, state: options.state });
    if (this.leader) this.leadRoom(name, options.state, undefined, this.tab);
    else this.say({ t: "join", tab: this.tab, room: name, state: options.state });
    return room;
  }

  /** This tab leaves a room. */
  private leaveRoom(name: string): void {
    if (!this.rooms.delete(name)) return;
    if (this.leader) this.release(name, this.tab);
    else this.say({ t: "leave", tab: this.tab, room: name });
  }

  /** As the leader: `tab` no longer holds `name`; the last one out leaves it. */
  private release(name: string, tab: string): void {
    const holders = this.holders.get(name);
    if (!holders?.delete(tab) || holders.size > 0) return;
    this.holders.delete(name);
    const room = this.led.get(name);
    this.led.delete(name);
    void room?.leave();
  }

  /** Leaves the shared connection (a leader hands it to another tab). */
  close(): void {
    if (!this.leader) this.say({ t: "bye", tab: this.tab });
    this.closed = true;
    this.client?.close();
    this.unlock?.();
    this.channel.close();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error("the shared client was closed"));
    }
  }

  private say(said: Said): void {
    if (!this.closed) this.channel.postMessage(said);
  }

  /** Holds the lock: connects, takes every tab's rooms, relays. */
  private lead(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.leader = true;
    this.client = new Edgewire(this.url, this.options);
    this.client.on("error", (e) => this.emit("error", e));
    for (const [name, { room, state }] of this.rooms) this.leadRoom(name, state, room.lastId, this.tab);
    this.say({ t: "leader", tab: this.tab });
    this.emit("leader", true);
    return new Promise((resolve) => (this.unlock = resolve));
  }

  /** As the leader: joins `name` once, relaying its events to every tab. */
  private leadRoom(name: string, state: unknown, since: string | undefined, tab: string): void {
    if (!this.client) return;
    let holders = this.holders.get(name);
    if (!holders) this.holders.set(name, (holders = new Set()));
    holders.add(tab);
    const known = this.led.get(name);
    if (known) {
      void known.ready.then(() => this.sendSnapshot(name, known));
      return;
    }
    const room = this.client.join(name, { state, since });
    this.led.set(name, room);
    const relay = (event: keyof RoomEvents) => (...args: unknown[]) => {
      this.rooms.get(name)?.room.event(event, args);
      this.say({ t: "event", room: name, name: event, args });
    };
    for (const event of ["message", "join", "leave", "state", "status", "reset"] as const) {
      room.on(event, relay(event) as never);
    }
    void room.ready.then(() => this.sendSnapshot(name, room));
  }

  private sendSnapshot(name: string, room: Room<unknown, unknown>): void {
    const said: Extract<Said, { t: "snapshot" }> = {
      t: "snapshot",
      room: name,
      self: room.self,
      peers: [...room.peers.values()],
      topics: [...room.topics.values()],
      lastId: room.lastId,
    };
    this.rooms.get(name)?.room.snapshot(said);
    this.say(said);
  }

  /** A write from this tab: done here when leading, else by the leader. */
  private write(room: string, write: Write): Promise<string> {
    if (this.leader) return this.perform(room, write);
    const id = randomId();
    return new Promise((resolve, reject) => {
      const ms = this.options.ackTimeoutMs ?? 15_000;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RelayError("timeout", `no answer from the leading tab within ${ms} ms: the write may or may not have been done`));
      }, ms);
      this.pending.set(id, { resolve, reject, timer });
      this.say({ t: "write", tab: this.tab, id, room, write });
    });
  }

  /** As the leader: does a tab's write on the room. */
  private async perform(name: string, write: Write): Promise<string> {
    const room = this.led.get(name);
    if (!room) throw new Error(`not joined to room ${name}`);
    switch (write.m) {
      case "send":
        return room.send(write.type, write.data, { to: write.to });
      case "state":
        await room.setState(write.state);
        return "";
      case "retain":
        return room.retain(write.topic, write.data, { ttl: write.ttl });
    }
  }

  private heard(said: Said): void {
    switch (said.t) {
      case "leader":
        // A new leader: tell it this tab's rooms, resuming where this tab is.
        this.say({
          t: "hello",
          tab: this.tab,
          rooms: [...this.rooms].map(([room, r]) => ({ room, state: r.state, since: r.room.lastId })),
        });
        return;
      case "hello":
        for (const r of said.rooms) this.leadRoom(r.room, r.state, r.since, said.tab);
        return;
      case "join":
        this.leadRoom(said.room, said.state, said.since, said.tab);
        return;
      case "leave":
        if (this.leader) this.release(said.room, said.tab);
        return;
      case "bye":
        if (this.leader) for (const name of [...this.holders.keys()]) this.release(name, said.tab);
        return;
      case "write":
        if (!this.leader) return;
        this.perform(said.room, said.write).then(
          (value) => this.say({ t: "result", to: said.tab, id: said.id, value }),
          (e: Error) =>
            e instanceof RelayError
              ? this.say({ t: "result", to: said.tab, id: said.id, error: e.message.slice(e.code.length + 2), code: e.code })
              : this.say({ t: "result", to: said.tab, id: said.id, error: e.message }),
        );
        return;
      case "result": {
        if (said.to !== this.tab) return;
        const p = this.pending.get(said.id);
        if (!p) return;
        this.pending.delete(said.id);
        clearTimeout(p.timer);
        if (said.error !== undefined) p.reject(new RelayError(said.code ?? "error", said.error));
        else p.resolve(said.value ?? "");
        return;
      }
      case "event":
        this.rooms.get(said.room)?.room.event(said.name, said.args);
        return;
      case "snapshot":
        this.rooms.get(said.room)?.room.snapshot(said);
        return;
    }
  }
}

/** Shares one relay connection among the tabs of this origin. */
export function shareConnection(url: string, options: SharedOptions = {}): SharedClient {
  return new SharedClient(url, options);
}
