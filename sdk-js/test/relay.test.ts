import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";

import { Edgewire, RelayError } from "../src/index.js";
import type { Message, StatusEvent, WebSocketConstructor } from "../src/index.js";
import { type RunningRelay, mint, startProxy, startRedis, startRelay, until } from "./support.js";

const WS = WebSocket as unknown as WebSocketConstructor;
let relay: RunningRelay;

before(async () => {
  relay = await startRelay();
});
after(async () => {
  await relay.stop();
});

function client(sub: string, rights = "read,write,retain", base = relay.base): Edgewire {
  return new Edgewire(base, { token: () => mint(sub, [`*=${rights}`]), WebSocket: WS, backoff: { baseMs: 50, capMs: 500 } });
}

test("two peers: presence, messages, direct messages and state", async () => {
  const ada = client("ada");
  const bob = client("bob");
  try {
    const a = ada.join("sdk-room", { state: { name: "Ada" } });
    await a.ready;
    const b = bob.join("sdk-room");
    await b.ready;
    await until(() => a.peers.size === 1 || undefined);
    assert.equal([...a.peers.values()][0]?.user, "bob");
    await until(() => [...b.peers.values()].find((p) => p.user === "ada"));
    assert.equal(ada.state, "open");
    assert.equal(ada.transport, "websocket");

    const got: Message[] = [];
    b.on("message", (m) => got.push(m));
    const id = await a.send("chat", { text: "hi" });
    const m = await until(() => got.find((x) => x.id === id));
    assert.deepEqual([m.type, m.data, m.from], ["chat", { text: "hi" }, a.self?.id]);

    const direct: Message[] = [];
    a.on("message", (x) => x.to && direct.push(x));
    await b.send("hint", "psst", { to: a.self?.id });
    const d = await until(() => direct[0]);
    assert.deepEqual([d.data, d.from], ["psst", b.self?.id]);

    await b.setState({ cursor: [1, 2] });
    await until(() => (a.peers.get(b.self?.id ?? "")?.state as { cursor?: number[] } | undefined)?.cursor);
    // The initial state given to join reached the other peer too.
    await until(() => (b.peers.get(a.self?.id ?? "")?.state as { name?: string } | undefined)?.name === "Ada" || undefined);

    const left: string[] = [];
    a.on("leave", (p, reason) => left.push(`${p.id}:${reason}`));
    await b.leave();
    await until(() => left[0]);
    assert.equal(left[0], `${b.self?.id}:closed`);
  } finally {
    ada.close();
    bob.close();
  }
});

test("request and response between peers", async () => {
  const ada = client("ada");
  const bob = client("bob");
  try {
    const a = ada.join("sdk-rpc");
    const b = bob.join("sdk-rpc");
    await Promise.all([a.ready, b.ready]);
    b.handle("add", (args) => {
      const { x, y } = args as { x: number; y: number };
      return x + y;
    });
    b.handle("fail", () => {
      throw new Error("no such board");
    });
    const bobId = b.self?.id ?? "";
    await until(() => a.peers.get(bobId));
    assert.equal(await a.request(bobId, "add", { x: 2, y: 3 }), 5);
    await assert.rejects(a.request(bobId, "fail"), /no such board/);
    await assert.rejects(a.request(bobId, "missing"), /no handler/);
    // A handler that never answers: the request times out.
    b.handle("slow", () => new Promise(() => undefined));
    await assert.rejects(a.request(bobId, "slow", null, { timeout: 100 }), /timed out/);
    // A request to a peer that leaves is rejected.
    const pending = a.request(bobId, "slow", null, { timeout: 10_000 });
    bob.close();
    await assert.rejects(pending, /left before answering/);
  } finally {
    ada.close();
    bob.close();
  }
});

test("retained topics: late joiners see them, watch sees values then changes, clear removes", async () => {
  const device = client("device");
  const dash = client("dash", "read");
  try {
    const d = device.join("sdk-plant");
    await d.ready;
    await d.retain("device/status/sn-1", "online");
    await d.retain("device/config/sn-1", { rate: 5 });
    const v = dash.join("sdk-plant");
    await v.ready;
    await until(() => v.topics.size === 2 || undefined);
    const seen: StatusEvent[] = [];
    v.watch("device/status/+", (e) => seen.push(e));
    assert.deepEqual(seen.map((e) => e.data), ["online"], "current values first");
    await d.retain("device/status/sn-2", "booting");
    await d.retain("device/config/sn-1", { rate: 6 });
    await until(() => seen.find((e) => e.topic === "device/status/sn-2"));
    assert.ok(!seen.some((e) => e.topic.startsWith("device/config")), "non-matching updates are not delivered");
    await d.clear("device/status/sn-1");
    await until(() => seen.find((e) => e.topic === "device/status/sn-1" && e.data === null));
    assert.ok(!v.topics.has("device/status/sn-1"));
    await assert.rejects(v.retain("device/status/x", 1), /forbidden/);
  } finally {
    device.close();
    dash.close();
  }
});

test("a client resumes after the relay is killed and restarted: every message once, in order", async () => {
  const redis = await startRedis();
  const env = { EDGEWIRE_REDIS_URL: redis.url, EDGEWIRE_REDIS_PREFIX: "sdk" };
  let first = await startRelay(env);
  const port = new URL(first.base).port;
  const reader = client("reader", "read", first.base);
  const writer = mint("writer", ["*=write"]);
  try {
    const room = reader.join("sdk-resume");
    await room.ready;
    const got: number[] = [];
    room.on("message", (m) => got.push(Number(m.data)));
    const publish = async (i: number, base: string) => {
      for (;;) {
        try {
          const r = await fetch(`${base}/rooms/sdk-resume`, { method: "POST", headers: { authorization: `Bearer ${writer}` }, body: String(i) });
          if (r.status === 202) return;
        } catch {
          // The relay is down: try again.
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    for (let i = 0; i < 20; i++) await publish(i, first.base);
    await until(() => got.length === 20 || undefined);
    await first.stop("SIGKILL");
    // While it is down nothing is lost: publishes wait for the new relay.
    first = await startRelay(env, Number(port));
    for (let i = 20; i < 40; i++) await publish(i, first.base);
    await until(() => got.length >= 40 || undefined, 20_000);
    assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => i));
    assert.equal(reader.state, "open");
  } finally {
    reader.close();
    await first.stop();
    redis.stop();
  }
});

test("publishes whose answers were lost go again with their keys: each delivered once, in order", async () => {
  const proxy = await startProxy(relay.base);
  const reader = client("reader", "read");
  const writer = client("writer", "read,write", proxy.base);
  try {
    const inbox = reader.join("sdk-keys");
    const outbox = writer.join("sdk-keys");
    await Promise.all([inbox.ready, outbox.ready]);
    const got: number[] = [];
    inbox.on("message", (m) => got.push(Number(m.data)));
    // The relay stores and delivers these, but its answers never arrive.
    proxy.muted = true;
    const sends: Promise<string>[] = [];
    for (let i = 0; i < 10; i++) sends.push(outbox.send("n", i));
    await until(() => got.length >= 10 || undefined);
    // The connection drops; the SDK reconnects and sends them again.
    proxy.cut();
    proxy.muted = false;
    for (let i = 10; i < 20; i++) sends.push(outbox.send("n", i));
    const ids = await Promise.all(sends);
    assert.equal(new Set(ids).size, 20, "each publish has its own id");
    await outbox.send("n", -1);
    await until(() => got.includes(-1) || undefined);
    assert.deepEqual(got, [...Array.from({ length: 20 }, (_, i) => i), -1]);
  } finally {
    reader.close();
    writer.close();
    proxy.close();
  }
});

test("an expiring token is refreshed from the provider: the session outlives it", async () => {
  const short = await startRelay({ EDGEWIRE_JWT_LEEWAY: "0" });
  let calls = 0;
  const ew = new Edgewire(short.base, {
    token: () => mint("ada", ["*=read,write"], calls++ === 0 ? "3s" : "1h"),
    WebSocket: WS,
  });
  try {
    const room = ew.join("sdk-expiry");
    await room.ready;
    const firstExpiry = Date.now() + 3000;
    // The relay warns before the deadline; the client asks the provider again.
    await until(() => calls >= 2 || undefined);
    // Past the first token's expiry the session is still open and working.
    await until(() => Date.now() > firstExpiry + 1000 || undefined, 10_000);
    assert.equal(ew.state, "open");
    const id = await room.send("still", "here");
    assert.ok(id.length > 0);
  } finally {
    ew.close();
    await short.stop();
  }
});

test("a refused token (4401) is replaced by a fresh one at once", async () => {
  let calls = 0;
  const states: string[] = [];
  const ew = new Edgewire(relay.base, {
    token: () => (calls++ === 0 ? "not-a-token" : mint("bob", ["*=read,write"])),
    WebSocket: WS,
    backoff: { baseMs: 60_000, capMs: 60_000 },
  });
  ew.on("state", (s) => states.push(s));
  try {
    const room = ew.join("sdk-retoken");
    // No 60 s backoff: 4401 reconnects immediately with a new token.
    await room.ready;
    assert.equal(calls, 2);
    assert.ok(states.includes("reconnecting"), states.join(","));
    assert.equal(ew.state, "open");
  } finally {
    ew.close();
  }
});

/** A WebSocket that a proxy blocks: it closes before any welcome. */
class Blocked {
  static blocked = true;
  readyState = 3;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor() {
    setTimeout(() => this.onclose?.({ code: 1006, reason: "blocked" }), 0);
  }
  send(): void {
    throw new Error("blocked");
  }
  close(): void {}
}

/** Blocked while `Switchable.blocked`, a real WebSocket afterwards. */
function switchable(): WebSocketConstructor {
  return function (url: string, protocols?: string | string[]) {
    return Blocked.blocked ? new Blocked() : new WebSocket(url, protocols);
  } as unknown as WebSocketConstructor;
}

test("falls back to SSE + POST when WebSockets are blocked, with the same API", async () => {
  Blocked.blocked = true;
  const ada = new Edgewire(relay.base, { token: () => mint("ada", ["*=read,write,retain"]), WebSocket: Blocked as unknown as WebSocketConstructor, retryWebSocketMs: 0 });
  const bob = client("bob");
  try {
    const a = ada.join("sdk-fallback", { state: { name: "Ada" } });
    await a.ready;
    assert.equal(ada.transport, "sse");
    const b = bob.join("sdk-fallback");
    await b.ready;
    const adaId = a.self?.id ?? "";
    const bobId = b.self?.id ?? "";
    await until(() => a.peers.get(bobId));
    await until(() => (b.peers.get(adaId)?.state as { name?: string } | undefined)?.name === "Ada" || undefined);

    const atBob: Message[] = [];
    const atAda: Message[] = [];
    b.on("message", (m) => atBob.push(m));
    a.on("message", (m) => atAda.push(m));
    const id = await a.send("chat", { text: "over POST" });
    const m = await until(() => atBob.find((x) => x.id === id));
    assert.deepEqual([m.from, m.data], [adaId, { text: "over POST" }], "POST with conn speaks as the SSE peer");
    await b.send("hint", "psst", { to: adaId });
    assert.equal((await until(() => atAda.find((x) => x.to === adaId))).data, "psst");

    b.handle("double", (n) => Number(n) * 2);
    a.handle("triple", (n) => Number(n) * 3);
    assert.equal(await a.request(bobId, "double", 21), 42);
    assert.equal(await b.request(adaId, "triple", 5), 15);

    const seen: StatusEvent[] = [];
    b.watch("kiosk/+", (e) => seen.push(e));
    await a.retain("kiosk/ada", "online");
    await until(() => seen.find((e) => e.data === "online"));
    await a.will("kiosk/ada", "offline");
    // A clean leave cancels the will.
    const left: string[] = [];
    b.on("leave", (p) => left.push(p.id));
    await a.leave();
    await until(() => left.includes(adaId) || undefined);
    await b.send("marker", 1);
    await until(() => atBob.find((x) => x.type === "marker"));
    assert.ok(!seen.some((e) => e.data === "offline"), "no will after a clean leave");
  } finally {
    ada.close();
    bob.close();
  }
});

test("upgrades back to WebSocket when it works again, missing and doubling nothing", async () => {
  Blocked.blocked = true;
  const reader = new Edgewire(relay.base, { token: () => mint("reader", ["*=read"]), WebSocket: switchable(), retryWebSocketMs: 100 });
  const writer = mint("writer", ["*=write"]);
  try {
    const room = reader.join("sdk-upgrade");
    await room.ready;
    assert.equal(reader.transport, "sse");
    const got: number[] = [];
    room.on("message", (m) => got.push(Number(m.data)));
    const publish = (i: number) => fetch(`${relay.base}/rooms/sdk-upgrade`, { method: "POST", headers: { authorization: `Bearer ${writer}` }, body: String(i) });
    for (let i = 0; i < 10; i++) await publish(i);
    await until(() => got.length === 10 || undefined);
    Blocked.blocked = false;
    let i = 10;
    while (reader.transport === "sse") {
      await publish(i++);
      await new Promise((r) => setTimeout(r, 20));
      assert.ok(i < 500, "never upgraded");
    }
    for (let k = 0; k < 10; k++) await publish(i++);
    // A last message: once it is here, any duplicate of an earlier one would be too.
    await publish(i++);
    await until(() => got.includes(i - 1) || undefined);
    assert.deepEqual(got, Array.from({ length: i }, (_, k) => k), "every message once, in order, across the upgrade");
  } finally {
    Blocked.blocked = true;
    reader.close();
  }
});

/** A minimal EventSource for Node, as browsers behave: no headers, events by
 * name, `onerror` on a non-200 answer or the end of the stream. */
class TestEventSource {
  static urls: string[] = [];
  onerror: ((ev: unknown) => void) | null = null;
  private listeners = new Map<string, ((ev: { data: string }) => void)[]>();
  private abort = new AbortController();
  constructor(url: string) {
    TestEventSource.urls.push(url);
    void (async () => {
      try {
        const res = await fetch(url, { headers: { accept: "text/event-stream" }, signal: this.abort.signal });
        if (!res.ok || !res.body) throw new Error(String(res.status));
        const { readSse } = await import("../src/transport/event-stream.js");
        for await (const frame of readSse(res.body)) {
          for (const l of this.listeners.get(frame.event ?? "message") ?? []) l({ data: frame.data ?? "" });
        }
      } catch {
        // Closed or failed: report it like a browser.
      }
      if (!this.abort.signal.aborted) this.onerror?.({});
    })();
  }
  addEventListener(type: string, listener: (ev: { data: string }) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  close(): void {
    this.abort.abort();
  }
}

test("where fetch cannot stream, the fallback reads with EventSource (token in the URL)", async () => {
  Blocked.blocked = true;
  TestEventSource.urls = [];
  const ada = new Edgewire(relay.base, {
    token: () => mint("ada", ["*=read,write"]),
    WebSocket: Blocked as unknown as WebSocketConstructor,
    EventSource: TestEventSource,
    sseReader: "eventsource",
    retryWebSocketMs: 0,
  });
  const bob = client("bob");
  try {
    const a = ada.join("sdk-es");
    await a.ready;
    assert.equal(ada.transport, "sse");
    assert.ok(TestEventSource.urls[0]?.includes("token="), "EventSource cannot send headers: the token is in the URL");
    const b = bob.join("sdk-es");
    await b.ready;
    const atAda: Message[] = [];
    const atBob: Message[] = [];
    a.on("message", (m) => atAda.push(m));
    b.on("message", (m) => atBob.push(m));
    await b.send("chat", "to ada");
    await until(() => atAda.find((m) => m.data === "to ada"));
    await a.send("chat", "to bob");
    await until(() => atBob.find((m) => m.data === "to bob" && m.from === a.self?.id));
  } finally {
    ada.close();
    bob.close();
  }
});

/** Every error code an app sees, by transport: a room the token may not
 * read, a write it may not make, a token the relay refuses, a token that
 * expires with nobody to refresh it, and a relay that drains. */
async function errorsSeen(transport: "websocket" | "sse"): Promise<string[]> {
  const own = await startRelay({ EDGEWIRE_JWT_LEEWAY: "0", EDGEWIRE_SHUTDOWN_GRACE: "5s" });
  const WebSocketCtor = transport === "sse" ? (Blocked as unknown as WebSocketConstructor) : WS;
  const make = (token: string) => new Edgewire(own.base, { token, WebSocket: WebSocketCtor, retryWebSocketMs: 0, backoff: { baseMs: 50, capMs: 200 } });
  const seen: string[] = [];
  // Recorded until the relay drains: after that it is gone, and a reconnect
  // may rightly report it unreachable before the test closes the clients.
  let draining = false;
  const record = (e: Error) => {
    if (draining) return;
    const code = e instanceof RelayError ? e.code : e.message;
    seen.push(code);
    draining = code === "draining";
  };
  const clients: Edgewire[] = [];
  try {
    // A room the token may not read: the join is refused.
    const reader = make(mint("errs", ["open=read"]));
    clients.push(reader);
    reader.on("error", record);
    reader.join("closed-room");
    await until(() => seen.includes("forbidden") || undefined);
    // A write the token may not make: the send rejects with the same code.
    const open = reader.join("open");
    await open.ready;
    const refused = await open.send("chat", "no").then(
      () => "sent",
      (e: Error) => (e instanceof RelayError ? e.code : e.message),
    );
    assert.equal(refused, "forbidden", `${transport}: a write the token may not make`);
    // A token signed with another key.
    const forged = make(`${mint("errs", ["*=read"]).slice(0, -4)}AAAA`);
    clients.push(forged);
    forged.on("error", record);
    forged.join("open");
    await until(() => seen.includes("token_invalid") || undefined);
    forged.close();
    // A token that expires (a string: nothing to refresh it with).
    const brief = make(mint("errs", ["*=read"], "2s"));
    clients.push(brief);
    brief.on("error", record);
    await brief.join("open").ready;
    await until(() => seen.includes("token_expired") || undefined, 15_000);
    brief.close();
    // The relay drains: the open session hears it before its end.
    const staying = make(mint("errs", ["*=read"]));
    clients.push(staying);
    staying.on("error", record);
    await staying.join("open").ready;
    void own.stop("SIGTERM");
    await until(() => seen.includes("draining") || undefined);
  } finally {
    for (const c of clients) c.close();
    await own.stop("SIGKILL");
  }
  return [...new Set(seen)].sort();
}

test("every relay error reaches the app with the same code on WebSocket and on SSE", async () => {
  Blocked.blocked = true;
  const overWebSocket = await errorsSeen("websocket");
  const overSse = await errorsSeen("sse");
  assert.deepEqual(overWebSocket, ["draining", "forbidden", "token_expired", "token_invalid"], "over WebSocket");
  assert.deepEqual(overSse, overWebSocket, "the same codes on both transports");
});

test("a shared client on its own (share: false) has the Room API: requests, retained topics, iterators", async () => {
  const { shareConnection } = await import("../src/tabs/index.js");
  const shared = (sub: string) => shareConnection(relay.base, { token: () => mint(sub, ["*=read,write,retain"]), WebSocket: WS, share: false });
  const ada = shared("ada");
  const bob = shared("bob");
  try {
    assert.equal(ada.mode, "alone");
    const a = ada.join<string, { name: string }>("shared-alone", { state: { name: "Ada" } });
    const b = bob.join<string, { name: string }>("shared-alone");
    await Promise.all([a.ready, b.ready]);
    a.handle("add", (args) => (args as number[]).reduce((x, y) => x + y, 0));
    // The state given to join follows the join: wait for both.
    const peer = await until(() => [...b.peers.values()].find((p) => p.user === "ada" && p.state?.name === "Ada"));
    assert.equal(await b.request(peer.id, "add", [2, 3]), 5);
    await assert.rejects(b.request(peer.id, "missing"), /no handler for missing/);

    const seen: unknown[] = [];
    b.watch("status/+", (s) => seen.push(s.data));
    await a.retain("status/ada", "busy");
    await until(() => seen.includes("busy") || undefined);
    await a.clear("status/ada");
    await until(() => (seen.includes(null) && !b.topics.has("status/ada")) || undefined);

    const stop = new AbortController();
    const messages = b.messages({ signal: stop.signal });
    await a.send("chat", "one");
    const first = await messages.next();
    assert.equal((first.value as Message).data, "one");
    stop.abort();
  } finally {
    ada.close();
    bob.close();
  }
});
