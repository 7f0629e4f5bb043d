/** One relay connection for all tabs of an origin (`edgewire/tabs`).
 *
 * Where the app gives a worker script (`worker` option) and the browser has
 * `SharedWorker`, the connection lives in that worker for as long as a tab
 * is open. Elsewhere (Safari, Android) the tabs elect a leader with the Web
 * Locks API and talk over a `BroadcastChannel`; when the leading tab closes,
 * its lock passes to another tab, which connects and resumes every room from
 * the last id the tabs saw, so nothing is lost or doubled. Either way each
 * room is joined once for all tabs, and the browser is one peer in it:
 * presence shows it once. `share: false` opts out: the tab keeps its own
 * connection (and its own presence entry). */
import { Emitter } from "../emitter.js";
import { RelayError } from "../errors.js";
import type { EdgewireOptions } from "../options.js";
import { Holder } from "./holder.js";
import { type Config, type FromHolder, type ToHolder, type Write, failure, randomId, tabLock, toError } from "./said.js";
import { SharedRoom } from "./shared-room.js";

export { SharedRoom } from "./shared-room.js";

/** Options of a shared connection: the client's, and how tabs share it. */
export interface SharedOptions extends EdgewireOptions {
  /** Tabs sharing one connection use the same name (default: from the URL). */
  channel?: string;
  /** A worker script that calls `serveTabs()`: where the browser has
   * `SharedWorker`, the connection lives there (started as a module worker). */
  worker?: string | URL;
  /** `false`: this tab keeps a connection of its own (default true). */
  share?: boolean;
}

/** Where this tab's connection lives: in a shared worker, in the tab the
 * Web Locks election chose, or in this tab alone (`share: false`, or no
 * Web Locks / BroadcastChannel in this browser). */
export type ShareMode = "worker" | "locks" | "alone";

/** The events of a shared client. */
export type SharedEvents = {
  /** This tab became the leader (it holds the connection), or stopped being it. */
  leader: [boolean];
  /** An error of the shared connection, or of a write without a caller. */
  error: [Error];
};

type Pending = { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> };

const TO_HOLDER = new Set<string>(["hello", "join", "leave", "bye", "write", "handle", "answer", "token"]);

/** One tab's end of the connection the tabs of an origin share. */
export class SharedClient extends Emitter<SharedEvents> {
  /** This tab's id among the tabs. */
  readonly tab = randomId();
  /** Where the connection lives (see `ShareMode`). */
  readonly mode: ShareMode;
  private readonly rooms = new Map<string, SharedRoom<unknown, unknown>>();
  private readonly pending = new Map<string, Pending>();
  private holder?: Holder;
  private channel?: BroadcastChannel;
  private port?: MessagePort;
  /** What this tab says before it holds its lifetime lock (then `undefined`). */
  private queue?: (Config | ToHolder)[] = [];
  private releaseTab?: () => void;
  private unlock?: () => void;
  private closed = false;
  private readonly onPageHide = () => this.close();

  constructor(
    private readonly url: string,
    private readonly options: SharedOptions = {},
  ) {
    super();
    const absolute = new URL(url, globalThis.location?.href).toString();
    const name = options.channel ?? `edgewire:${absolute}`;
    const locks = globalThis.navigator?.locks;
    this.mode = options.share === false || !locks || typeof BroadcastChannel === "undefined" ? "alone" : options.worker && typeof SharedWorker !== "undefined" ? "worker" : "locks";
    if (this.mode === "alone") {
      this.queue = undefined;
      this.holder = new Holder(url, options, (said) => this.fromHolder(said), { own: this.tab });
      queueMicrotask(() => this.emit("leader", true));
      return;
    }
    // The tab holds its lifetime lock before it says anything, so that the
    // holder, asking for the lock, gets it only once the tab has gone.
    void locks.request(tabLock(this.tab), () => {
      const queued = this.queue ?? [];
      this.queue = undefined;
      for (const said of queued) this.post(said);
      return new Promise<void>((resolve) => (this.releaseTab = resolve));
    });
    globalThis.addEventListener?.("pagehide", this.onPageHide);
    if (this.mode === "worker" && options.worker) {
      const worker = new SharedWorker(options.worker, { type: "module", name });
      this.port = worker.port;
      this.port.onmessage = (ev: MessageEvent<FromHolder>) => this.fromHolder(ev.data);
      this.port.start();
      const { token, WebSocket: _ws, fetch: _fetch, EventSource: _es, channel: _channel, worker: _worker, share: _share, ...plain } = options;
      this.say({ t: "config", url: absolute, options: { ...plain, token: typeof token === "string" ? token : undefined }, tokenFromTab: typeof token === "function" });
      this.say({ t: "hello", tab: this.tab, rooms: [] });
      return;
    }
    this.channel = new BroadcastChannel(name);
    this.channel.onmessage = (ev: MessageEvent<ToHolder | FromHolder>) => {
      const said = ev.data;
      if (TO_HOLDER.has(said.t)) this.holder?.hear(said as ToHolder);
      else this.fromHolder(said as FromHolder);
    };
    // Waits in the lock's queue; holds it, as the leader, until closed.
    void locks.request(`${name}:leader`, () => this.lead());
  }

  /** True while this tab holds the connection. */
  get leader(): boolean {
    return this.holder !== undefined;
  }

  /** Joins a room for this tab (the holder joins it once for all tabs). */
  join<Msg = unknown, State = unknown>(name: string, options: { state?: State } = {}): SharedRoom<Msg, State> {
    const known = this.rooms.get(name);
    if (known) return known as SharedRoom<Msg, State>;
    const room = new SharedRoom<Msg, State>(
      name,
      {
        write: (room, write, signal) => this.write(room, write, signal),
        handle: (room, method) => this.say({ t: "handle", tab: this.tab, room, method }),
        leave: (room) => {
          if (this.rooms.delete(room)) this.say({ t: "leave", tab: this.tab, room });
        },
      },
      options.state,
    );
    this.rooms.set(name, room as SharedRoom<unknown, unknown>);
    this.say({ t: "join", tab: this.tab, room: room.held() });
    return room;
  }

  /** Leaves the shared connection (a leading tab hands it to another). */
  close(): void {
    if (this.closed) return;
    if (!this.holder) this.say({ t: "bye", tab: this.tab });
    this.closed = true;
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    this.holder?.close();
    this.unlock?.();
    this.releaseTab?.();
    this.channel?.close();
    this.port?.close();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error("the shared client was closed"));
    }
    this.pending.clear();
  }

  /** Says something to the holder: here, over the port, or on the channel. */
  private say(said: Config | ToHolder): void {
    if (this.closed) return;
    if (this.queue && !this.holder) this.queue.push(said);
    else this.post(said);
  }

  /** Delivers to the holder: in this tab, or over the port or channel. */
  private post(said: Config | ToHolder): void {
    if (!this.holder) (this.port ?? this.channel)?.postMessage(said);
    else if (said.t !== "config") this.holder.hear(said);
  }

  /** Holds the leader lock: connects, takes every tab's rooms, relays. */
  private lead(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.holder = new Holder(
      this.url,
      this.options,
      (said) => {
        this.fromHolder(said);
        if (!this.closed) this.channel?.postMessage(said);
      },
      { own: this.tab },
    );
    this.holder.hear({ t: "hello", tab: this.tab, rooms: [...this.rooms.values()].map((room) => room.held()) });
    this.channel?.postMessage({ t: "leader", tab: this.tab } satisfies FromHolder);
    this.emit("leader", true);
    return new Promise((resolve) => (this.unlock = resolve));
  }

  /** Has the holder do a write, and waits for its result. */
  private write(room: string, write: Write, signal?: AbortSignal): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = randomId();
    const ms = Math.max(this.options.ackTimeoutMs ?? 15_000, write.m === "request" ? (write.timeout ?? 10_000) + 1_000 : 0);
    return new Promise((resolve, reject) => {
      const settle = () => {
        this.pending.delete(id);
        clearTimeout(timer);
      };
      const timer = setTimeout(() => {
        settle();
        reject(new RelayError("timeout", `no answer from the tab or worker holding the connection within ${ms} ms: the write may or may not have been done`));
      }, ms);
      signal?.addEventListener("abort", () => this.pending.has(id) && (settle(), reject(signal.reason)), { once: true });
      this.pending.set(id, { resolve, reject, timer });
      this.say({ t: "write", tab: this.tab, id, room, write });
    });
  }

  /** What the holder said to the tabs. */
  private fromHolder(said: FromHolder): void {
    switch (said.t) {
      case "leader":
        // A new leader: tell it this tab's rooms, resuming where this tab is.
        if (said.tab !== this.tab) this.say({ t: "hello", tab: this.tab, rooms: [...this.rooms.values()].map((room) => room.held()) });
        return;
      case "result": {
        const pending = said.to === this.tab ? this.pending.get(said.id) : undefined;
        if (!pending) return;
        this.pending.delete(said.id);
        clearTimeout(pending.timer);
        if (said.failure) pending.reject(toError(said.failure));
        else pending.resolve(said.value);
        return;
      }
      case "event":
        this.rooms.get(said.room)?.event(said.name, said.args);
        return;
      case "snapshot":
        this.rooms.get(said.room)?.snapshot(said);
        return;
      case "call": {
        const room = this.rooms.get(said.room);
        if (said.to !== this.tab || !room) return;
        room.answer(said.method, said.args, said.from).then(
          (result) => this.say({ t: "answer", id: said.id, result }),
          (e: unknown) => this.say({ t: "answer", id: said.id, failure: failure(e) }),
        );
        return;
      }
      case "token?": {
        const { token } = this.options;
        if (typeof token !== "function") return;
        Promise.resolve(token()).then(
          (value) => this.say({ t: "token", id: said.id, token: value }),
          (e: unknown) => this.say({ t: "token", id: said.id, failure: failure(e) }),
        );
        return;
      }
      case "error":
        this.emit("error", toError(said.failure));
        return;
    }
  }
}

/** Shares one relay connection among the tabs of this origin. */
export function shareConnection(url: string, options: SharedOptions = {}): SharedClient {
  return new SharedClient(url, options);
}
