/** The one end of a shared connection that talks to the relay: it runs in
 * the leading tab or in a `SharedWorker`, holds the `Edgewire` client, joins
 * each room once for every tab that holds it, relays the rooms' events to
 * all tabs and does the tabs' writes. */
import { Edgewire } from "../client.js";
import type { EdgewireOptions } from "../options.js";
import type { PeerInfo } from "../protocol.js";
import type { Room } from "../room.js";
import { type FromHolder, type HeldRoom, type ToHolder, type Write, failure, randomId, tabLock, toError } from "./said.js";

const RELAYED = ["message", "join", "leave", "state", "status", "reset"] as const;

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

/** Holds the relay connection for the tabs; `post` reaches every tab. */
export class Holder {
  private readonly client: Edgewire;
  private readonly rooms = new Map<string, Room<unknown, unknown>>();
  /** Which tabs hold each room. */
  private readonly holders = new Map<string, Set<string>>();
  /** Which tab answers each room's request method. */
  private readonly handlers = new Map<string, Map<string, string>>();
  /** Tabs whose lifetime lock is awaited (their end releases their rooms). */
  private readonly watched = new Set<string>();
  /** Calls sent to tabs (request handlers) and token asks, by id. */
  private readonly asks = new Map<string, Pending>();
  private closed = false;

  constructor(
    url: string,
    options: EdgewireOptions,
    private readonly post: (said: FromHolder) => void,
    private readonly tabs: {
      /** The holder's own tab, which needs no lifetime watch (none in a worker). */
      own?: string;
      /** Called when a tab has gone. */
      onGone?: (tab: string) => void;
    } = {},
  ) {
    this.client = new Edgewire(url, options);
    this.client.on("error", (e) => this.post({ t: "error", failure: failure(e) }));
  }

  /** A token from a tab, for a holder whose tabs keep the token function. */
  askToken(): Promise<string> {
    return this.ask({ t: "token?", id: randomId() }) as Promise<string>;
  }

  /** Acts on what a tab said. */
  hear(said: ToHolder): void {
    switch (said.t) {
      case "hello":
        for (const room of said.rooms) this.hold(said.tab, room);
        return;
      case "join":
        this.hold(said.tab, said.room);
        return;
      case "leave":
        this.release(said.room, said.tab);
        return;
      case "bye":
        this.gone(said.tab);
        return;
      case "handle":
        this.handleFor(said.tab, said.room, said.method);
        return;
      case "write":
        this.perform(said.room, said.write).then(
          (value) => this.post({ t: "result", to: said.tab, id: said.id, value }),
          (e: unknown) => this.post({ t: "result", to: said.tab, id: said.id, failure: failure(e) }),
        );
        return;
      case "answer":
      case "token": {
        const pending = this.asks.get(said.id);
        if (!pending) return;
        this.asks.delete(said.id);
        clearTimeout(pending.timer);
        if (said.failure) pending.reject(toError(said.failure));
        else pending.resolve(said.t === "answer" ? said.result : said.token);
        return;
      }
    }
  }

  /** Closes the relay connection (another holder takes over, or none is needed). */
  close(): void {
    this.closed = true;
    this.client.close();
    for (const pending of this.asks.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error("the shared connection's holder closed"));
    }
    this.asks.clear();
  }

  /** `tab` holds `held.room`: joins it if no tab did, and sends its state. */
  private hold(tab: string, held: HeldRoom): void {
    if (this.closed) return;
    this.watch(tab);
    const name = held.room;
    let holders = this.holders.get(name);
    if (!holders) this.holders.set(name, (holders = new Set()));
    holders.add(tab);
    for (const method of held.handles) this.handleFor(tab, name, method);
    let room = this.rooms.get(name);
    if (!room) {
      room = this.client.join(name, { state: held.state, since: held.since });
      this.rooms.set(name, room);
      for (const event of RELAYED) {
        room.on(event, ((...args: unknown[]) => this.post({ t: "event", room: name, name: event, args })) as never);
      }
      if (held.will) void this.perform(name, held.will).catch(() => undefined);
    }
    const joined = room;
    void joined.ready.then(() => {
      if (this.rooms.get(name) !== joined) return;
      this.post({ t: "snapshot", room: name, self: joined.self, peers: [...joined.peers.values()], topics: [...joined.topics.values()], lastId: joined.lastId });
    });
  }

  /** `tab` no longer holds `name`; the last one out leaves the room. */
  private release(name: string, tab: string): void {
    const holders = this.holders.get(name);
    if (!holders?.delete(tab)) return;
    const handlers = this.handlers.get(name);
    for (const [method, by] of handlers ?? []) if (by === tab) handlers?.delete(method);
    if (holders.size > 0) return;
    this.holders.delete(name);
    this.handlers.delete(name);
    const room = this.rooms.get(name);
    this.rooms.delete(name);
    void room?.leave();
  }

  /** A tab is gone (it said bye, or its lifetime lock came free). */
  private gone(tab: string): void {
    this.tabs.onGone?.(tab);
    for (const name of [...this.holders.keys()]) this.release(name, tab);
  }

  /** Waits for `tab`'s lifetime lock: granted once the tab has ended, however it ended. */
  private watch(tab: string): void {
    if (tab === this.tabs.own || this.watched.has(tab) || !globalThis.navigator?.locks) return;
    this.watched.add(tab);
    void navigator.locks.request(tabLock(tab), () => {
      this.watched.delete(tab);
      if (!this.closed) this.gone(tab);
    });
  }

  /** Routes the room's `method` requests to the tab that handles them. */
  private handleFor(tab: string, name: string, method: string): void {
    let handlers = this.handlers.get(name);
    if (!handlers) this.handlers.set(name, (handlers = new Map()));
    handlers.set(method, tab);
    this.rooms.get(name)?.handle(method, (args, from) => {
      const by = this.handlers.get(name)?.get(method);
      if (!by) throw new Error(`no handler for ${method}`);
      return this.ask({ t: "call", to: by, id: randomId(), room: name, method, args, from: from as PeerInfo | undefined });
    });
  }

  /** Posts a call (or a token ask) to the tabs and waits for its answer. */
  private ask(said: Extract<FromHolder, { t: "call" | "token?" }>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.asks.delete(said.id);
        reject(new Error(`no tab answered ${said.t === "call" ? said.method : "for a token"} in time`));
      }, 10_000);
      this.asks.set(said.id, { resolve, reject, timer });
      this.post(said);
    });
  }

  /** Does a tab's write on a room. */
  private async perform(name: string, write: Write): Promise<unknown> {
    const room = this.rooms.get(name);
    if (!room) throw new Error(`not joined to room ${name}`);
    switch (write.m) {
      case "send":
        return room.send(write.type, write.data, { to: write.to });
      case "state":
        return room.setState(write.state);
      case "retain":
        return write.data === null ? room.clear(write.topic) : room.retain(write.topic, write.data, { ttl: write.ttl });
      case "will":
        return room.will(write.topic, write.data, { after: write.after });
      case "request":
        return room.request(write.peer, write.method, write.args, { timeout: write.timeout });
    }
  }
}
