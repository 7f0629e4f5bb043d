import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { CLOSE_CODES, ERROR_CODES, Edgewire, RelayError, backoffDelay, closePolicy, topicMatches } from "../src/index.js";
import type { WebSocketLike } from "../src/index.js";
import { Emitter } from "../src/emitter.js";
import { Room } from "../src/room.js";
import { SseParser } from "../src/transport/event-stream.js";
import type { SseFrame } from "../src/transport/event-stream.js";
import { ROOT } from "./support.js";

test("close and error codes agree with the relay's table in fixtures/codes.json", () => {
  const table = JSON.parse(readFileSync(path.join(ROOT, "fixtures/codes.json"), "utf8"));
  assert.deepEqual(CLOSE_CODES, table.close_codes);
  assert.deepEqual(ERROR_CODES, table.error_codes);
});

test("the close-code policy follows the contract", () => {
  assert.equal(closePolicy(1000), "stop");
  assert.equal(closePolicy(1008), "stop");
  assert.equal(closePolicy(4403), "stop");
  assert.equal(closePolicy(4409), "stop");
  assert.equal(closePolicy(4401), "refresh-token");
  assert.equal(closePolicy(4429), "retry-after");
  for (const code of [1001, 1006, 1009, 1011, 4408, 4508]) assert.equal(closePolicy(code), "reconnect");
});

test("backoff is full jitter, exponential and capped", () => {
  assert.equal(backoffDelay(0, { baseMs: 100, capMs: 1000 }, () => 0), 0);
  assert.equal(backoffDelay(0, { baseMs: 100, capMs: 1000 }, () => 0.999), 99);
  assert.equal(backoffDelay(3, { baseMs: 100, capMs: 1000 }, () => 0.5), 400);
  assert.equal(backoffDelay(20, { baseMs: 100, capMs: 1000 }, () => 0.999), 999);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(5, { baseMs: 100, capMs: 30_000 });
    assert.ok(d >= 0 && d < 3200);
  }
});

test("topic filters match as the relay's do", () => {
  assert.ok(topicMatches("device/+/sn-7", "device/status/sn-7"));
  assert.ok(!topicMatches("device/+/sn-7", "device/status/x/sn-7"));
  assert.ok(topicMatches("device/*", "device/status/sn-7"));
  assert.ok(!topicMatches("device/*", "device"));
  assert.ok(topicMatches("a", "a") && !topicMatches("a", "a/b"));
});

test("every event kind in the golden transcripts is one the SDK handles", () => {
  const known = new Set(["welcome", "message", "status", "join", "leave", "state", "ack", "error", "reset", "pong", "expiring"]);
  const dir = path.join(ROOT, "fixtures/transcripts");
  const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
  assert.ok(files.length >= 5);
  for (const file of files) {
    const transcript = JSON.parse(readFileSync(path.join(dir, file), "utf8"));
    for (const step of transcript.steps) {
      const patterns = step.event ? [step.event] : (step.unordered ?? []);
      for (const p of patterns) assert.ok(known.has(p.kind), `${file}: ${p.kind}`);
    }
  }
});

/** A WebSocket that never opens: everything the client sends must queue. */
class NeverOpens implements WebSocketLike {
  readyState = 0;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  send(): void {
    throw new Error("must not send before the welcome");
  }
  close(): void {}
}

test("sends queue while disconnected, up to a bound, and fail clearly beyond it", async () => {
  const client = new Edgewire("http://relay.invalid", { token: "t", WebSocket: NeverOpens, maxQueue: 3 });
  await new Promise((r) => setTimeout(r, 0));
  const room = client.join("r");
  const queued = [room.send("m", 1), room.send("m", 2), room.send("m", 3)];
  await assert.rejects(room.send("m", 4), /send queue is full/);
  client.close();
  for (const q of queued) await assert.rejects(q, /closed/);
});

/** A WebSocket the test drives by hand; every instance is recorded. */
class Scripted implements WebSocketLike {
  static made: Scripted[] = [];
  readyState = 0;
  sent: string[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  constructor(readonly url: string, readonly protocols?: string | string[]) {
    Scripted.made.push(this);
  }
  welcome(peer = "u.1"): void {
    this.readyState = 1;
    this.onmessage?.({ data: JSON.stringify({ kind: "welcome", room: null, peer: { id: peer, user: "u", meta: null }, peers: [], last_id: null }) });
  }
  event(e: object): void {
    this.onmessage?.({ data: JSON.stringify(e) });
  }
  drop(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
  send(data: string): void {
    this.sent.push(data);
  }
  close(): void {}
}

const flush = () => new Promise<void>((r) => setImmediate(r));

test("state machine under fake time: reconnect with backoff, 4401 at once, 4429 after retry_after, stop on 4403", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  Scripted.made = [];
  let tokens = 0;
  const states: string[] = [];
  const client = new Edgewire("http://relay.test", {
    token: () => `t${++tokens}`,
    WebSocket: Scripted,
    fallback: false,
    backoff: { baseMs: 1000, capMs: 1000 },
  });
  client.on("state", (s) => states.push(s));
  await flush();
  assert.equal(Scripted.made.length, 1);
  assert.deepEqual(Scripted.made[0]?.protocols, ["edgewire", "bearer.t1"], "the token rides in the subprotocol");
  Scripted.made[0]?.welcome();
  assert.equal(client.state, "open");

  // A drop: reconnecting, and a new socket only after the backoff delay.
  Scripted.made[0]?.drop(1006);
  assert.equal(client.state, "reconnecting");
  await flush();
  assert.equal(Scripted.made.length, 1, "no reconnect before the backoff");
  t.mock.timers.tick(1000);
  await flush();
  assert.equal(Scripted.made.length, 2);
  assert.deepEqual(Scripted.made[1]?.protocols, ["edgewire", "bearer.t2"], "a fresh token on every attempt");

  // 4401: at once, with a new token, no backoff.
  Scripted.made[1]?.drop(4401);
  await flush();
  assert.equal(Scripted.made.length, 3);
  Scripted.made[2]?.welcome();

  // 4429: not before the relay's retry_after.
  Scripted.made[2]?.event({ kind: "error", code: "rate_limited", message: "slow down", retry_after: 5 });
  Scripted.made[2]?.drop(4429);
  t.mock.timers.tick(4999);
  await flush();
  assert.equal(Scripted.made.length, 3, "waits retry_after");
  t.mock.timers.tick(1001);
  await flush();
  assert.equal(Scripted.made.length, 4);

  // 4403: stop for good.
  Scripted.made[3]?.welcome();
  Scripted.made[3]?.drop(4403);
  t.mock.timers.tick(60_000);
  await flush();
  assert.equal(Scripted.made.length, 4);
  assert.equal(client.state, "closed");
  assert.deepEqual(states.filter((s, i) => s !== states[i - 1]).slice(-2), ["open", "closed"]);
});

test("queued sends go out after the welcome, in order", async () => {
  Scripted.made = [];
  const client = new Edgewire("http://relay.test", { token: "t", WebSocket: Scripted, fallback: false });
  await flush();
  const room = client.join("r");
  const sending = room.send("m", "queued");
  assert.equal(Scripted.made[0]?.sent.length, 0, "nothing sent before the welcome");
  Scripted.made[0]?.welcome();
  const ops = (Scripted.made[0]?.sent ?? []).map((s) => JSON.parse(s) as { op: string; ref: number; data?: string });
  assert.deepEqual(ops.map((o) => o.op), ["join", "pub"], "the join first, then the queued send");
  const pub = ops[1];
  Scripted.made[0]?.event({ kind: "ack", ref: pub?.ref, id: "5-0" });
  assert.equal(await sending, "5-0");
  client.close();
});

test("a reset mid-stream (events lost) rebuilds presence and topics from the room's snapshot", async () => {
  Scripted.made = [];
  const asked: string[] = [];
  const fetchStub = (async (url: string) => {
    asked.push(url);
    const body = {
      room: "r",
      peers: [{ id: "b.1", user: "b", meta: null, state: null }],
      topics: { "t/x": { topic: "t/x", data: "on", ts: 1, from: "b.1" } },
    };
    return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  }) as unknown as typeof fetch;
  const client = new Edgewire("http://relay.test", { token: "t", WebSocket: Scripted, fallback: false, fetch: fetchStub });
  await flush();
  const room = client.join("r");
  const ws = Scripted.made[0];
  ws?.welcome();
  const join = JSON.parse(ws?.sent[0] ?? "{}") as { ref: number };
  ws?.event({ kind: "ack", ref: join.ref });
  ws?.event({ kind: "welcome", room: "r", peer: { id: "u.1", user: "u", meta: null }, peers: [{ id: "b.1", user: "b", meta: null }], last_id: "1-0" });
  await room.ready;
  const seen: string[] = [];
  room.on("reset", () => seen.push("reset"));
  room.on("join", (p) => seen.push(`join ${p.id}`));
  room.on("status", (s) => seen.push(`status ${s.topic}`));
  ws?.event({ kind: "reset", room: "r", reason: "events_lost" });
  for (let i = 0; i < 10 && seen.length < 3; i++) await flush();
  assert.deepEqual(seen, ["reset", "join b.1", "status t/x"]);
  assert.deepEqual(asked, ["http://relay.test/rooms/r"]);
  assert.ok(room.peers.has("b.1"));
  // A reset before a resume's welcome needs no snapshot: the welcome follows.
  ws?.event({ kind: "reset", room: "r", reason: "history_gap" });
  await flush();
  assert.equal(asked.length, 1);
  client.close();
});

// The HTML standard's event-stream examples (§9.2.6), fed whole and one
// character at a time, with LF, CRLF and CR line endings.

function parseAll(text: string, piece: number): SseFrame[] {
  const parser = new SseParser();
  const frames: SseFrame[] = [];
  for (let i = 0; i < text.length; i += piece) frames.push(...parser.push(text.slice(i, i + piece)));
  return frames;
}

function eachWay(text: string, check: (frames: SseFrame[], how: string) => void): void {
  for (const [name, ending] of [["LF", "\n"], ["CRLF", "\r\n"], ["CR", "\r"]] as const) {
    const body = text.replace(/\n/g, ending);
    for (const piece of [body.length || 1, 1, 2]) check(parseAll(body, piece), `${name}, pieces of ${piece}`);
  }
}

test("SSE: data lines join with LF (the standard's stock example)", () => {
  eachWay("data: YHOO\ndata: +2\ndata: 10\n\n", (frames, how) => {
    assert.deepEqual(frames, [{ event: "message", data: "YHOO\n+2\n10" }], how);
  });
});

test("SSE: comments, ids kept across events, an empty id, one space stripped", () => {
  eachWay(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n", (frames, how) => {
    assert.deepEqual(
      frames,
      [
        { event: "message", data: "first event", id: "1" },
        { event: "message", data: "second event", id: "" },
        { event: "message", data: " third event", id: "" },
      ],
      how,
    );
  });
});

test("SSE: empty data lines count, an unfinished event at the end is dropped", () => {
  eachWay("data\n\ndata\ndata\n\ndata:", (frames, how) => {
    assert.deepEqual(
      frames,
      [
        { event: "message", data: "" },
        { event: "message", data: "\n" },
      ],
      how,
    );
  });
});

test("SSE: a colon with or without its space reads the same", () => {
  eachWay("data:test\n\ndata: test\n\n", (frames, how) => {
    assert.deepEqual(frames, [{ event: "message", data: "test" }, { event: "message", data: "test" }], how);
  });
});

test("SSE: event names, retry, unknown fields, a blank event and a BOM", () => {
  eachWay("\uFEFFretry: 2000\nfoo: bar\n\nevent: welcome\ndata: {\"a\":1}\n\nevent: error\nretry: x\ndata: e\n\n", (frames, how) => {
    assert.deepEqual(
      frames,
      [
        { event: "welcome", data: '{"a":1}', retry: 2000 },
        { event: "error", data: "e", retry: 2000 },
      ],
      how,
    );
  });
});

test("a listener that throws is reported and the others still run", () => {
  class Probe extends Emitter<{ ping: [number] }> {
    fire(n: number): void {
      this.emit("ping", n);
    }
  }
  const probe = new Probe();
  const seen: number[] = [];
  const reported: unknown[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => reported.push(args[1]);
  try {
    probe.on("ping", () => {
      throw new Error("app bug");
    });
    probe.on("ping", (n) => seen.push(n));
    probe.fire(7);
  } finally {
    console.error = original;
  }
  assert.deepEqual(seen, [7], "the second listener ran");
  assert.equal((reported[0] as Error).message, "app bug", "the throw was reported");
});

test("the typed usage example compiles without a single cast", () => {
  const source = readFileSync(path.join(ROOT, "sdk-js/test/typed-usage.ts"), "utf8");
  const code = source
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("//"))
    .join("\n");
  assert.doesNotMatch(code, /\bas\s+[A-Za-z{(]/, "a cast in typed-usage.ts");
  assert.doesNotMatch(code, /<[A-Za-z]+>\s*[a-z(]/, "an angle-bracket cast in typed-usage.ts");
  assert.doesNotMatch(code, /!\./, "a non-null assertion in typed-usage.ts");
});

test("an op with no answer fails with code timeout; one still queued is never sent", async () => {
  Scripted.made = [];
  const client = new Edgewire("http://relay.test", { token: "t", WebSocket: Scripted, fallback: false, ackTimeoutMs: 30 });
  await flush();
  const room = client.join("r");
  const queued = room.send("m", "late");
  await assert.rejects(queued, (e: RelayError) => e.code === "timeout" && /not sent/.test(e.message));
  Scripted.made[0]?.welcome();
  const ops = (Scripted.made[0]?.sent ?? []).map((s) => (JSON.parse(s) as { op: string }).op);
  assert.deepEqual(ops, ["join"], "the timed-out publish was dropped from the queue");
  const unanswered = room.send("m", "sent");
  await assert.rejects(unanswered, (e: RelayError) => e.code === "timeout" && /may still be delivered/.test(e.message));
  client.close();
});

test("a WebSocket never welcomed is given up after the connect timeout, and retried", async () => {
  Scripted.made = [];
  const errors: string[] = [];
  const client = new Edgewire("http://relay.test", {
    token: "t",
    WebSocket: Scripted,
    fallback: false,
    connectTimeoutMs: 20,
    backoff: { baseMs: 1, capMs: 1 },
  });
  client.on("error", (e) => errors.push(e instanceof RelayError ? e.code : e.message));
  for (let i = 0; i < 100 && Scripted.made.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(Scripted.made.length >= 2, "a second socket after the first was given up");
  assert.equal(errors[0], "timeout");
  Scripted.made.at(-1)?.welcome();
  assert.equal(client.state, "open");
  client.close();
});

test("AbortSignal: listeners, peer requests, the room, and for-await over messages", async () => {
  Scripted.made = [];
  const client = new Edgewire("http://relay.test", { token: "t", WebSocket: Scripted, fallback: false });
  await flush();
  const rooms = new AbortController();
  const room = client.join<string>("r", { signal: rooms.signal });
  const ws = Scripted.made[0];
  ws?.welcome();
  ws?.event({ kind: "welcome", room: "r", peer: { id: "u.1", user: "u", meta: null }, peers: [{ id: "b.1", user: "b", meta: null, state: null }], last_id: null });
  await room.ready;

  const listening = new AbortController();
  const heard: string[] = [];
  room.on("message", (m) => heard.push(m.data), { signal: listening.signal });
  const loop = new AbortController();
  const looped: string[] = [];
  const consumer = (async () => {
    for await (const m of room.messages({ signal: loop.signal })) looped.push(m.data);
  })();
  ws?.event({ kind: "message", room: "r", id: "1-0", ts: 1, from: "b.1", type: "chat", data: "one" });
  listening.abort();
  ws?.event({ kind: "message", room: "r", id: "2-0", ts: 2, from: "b.1", type: "chat", data: "two" });
  await flush();
  loop.abort();
  await consumer;
  assert.deepEqual(heard, ["one"], "an aborted listener hears nothing more");
  assert.deepEqual(looped, ["one", "two"], "the loop saw both, then ended on abort");

  const asking = new AbortController();
  const pending = room.request("b.1", "slow", null, { signal: asking.signal });
  asking.abort(new Error("gave up"));
  await assert.rejects(pending, /gave up/);

  rooms.abort();
  await flush();
  const ops = (ws?.sent ?? []).map((s) => (JSON.parse(s) as { op: string }).op);
  assert.equal(ops.at(-1), "leave", "aborting the join's signal leaves the room");
  client.close();
});

test("a message loop that falls too far behind throws instead of growing", async () => {
  Scripted.made = [];
  const client = new Edgewire("http://relay.test", { token: "t", WebSocket: Scripted, fallback: false });
  await flush();
  const room = client.join("r");
  const ws = Scripted.made[0];
  ws?.welcome();
  const iterator = room.messages({ buffer: 2 });
  for (let i = 1; i <= 3; i++) ws?.event({ kind: "message", room: "r", id: `${i}-0`, ts: i, from: "b.1", type: "chat", data: i });
  await assert.rejects(async () => {
    for await (const _ of iterator) {
      // never catches up
    }
  }, /more than 2 message events/);
  client.close();
});

test("the core bundle stays within 8 KiB gzipped (minified, everything the index exports)", async () => {
  const esbuild = await import("esbuild");
  const { gzipSync } = await import("node:zlib");
  const result = await esbuild.build({
    entryPoints: [path.join(ROOT, "sdk-js/src/index.ts")],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    write: false,
  });
  const code = result.outputFiles[0]?.contents ?? new Uint8Array();
  const gzipped = gzipSync(code, { level: 9 }).length;
  console.log(`core bundle: ${code.length} B minified, ${gzipped} B gzipped`);
  assert.ok(gzipped <= 8192, `core bundle ${gzipped} B gzipped, over 8 KiB`);
  const react = await esbuild.build({
    entryPoints: [path.join(ROOT, "sdk-js/src/react/index.ts")],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2022",
    external: ["react"],
    write: false,
  });
  const bindings = react.outputFiles[0]?.contents ?? new Uint8Array();
  console.log(`react entry (with the core it imports, React itself external): ${gzipSync(bindings, { level: 9 }).length} B gzipped`);
  assert.ok(!new TextDecoder().decode(code).includes("useSyncExternalStore"), "the core bundle holds no React code");
  for (const entry of ["tabs/index", "tabs/worker"]) {
    const built = await esbuild.build({
      entryPoints: [path.join(ROOT, `sdk-js/src/${entry}.ts`)],
      bundle: true,
      minify: true,
      format: "esm",
      target: "es2022",
      write: false,
    });
    const bytes = built.outputFiles[0]?.contents ?? new Uint8Array();
    console.log(`${entry} entry (with the core it runs where the connection lives): ${gzipSync(bytes, { level: 9 }).length} B gzipped`);
  }
});

test("a coalesced presence event is applied change by change; your own join and known peers are not news", () => {
  const link = { request: () => Promise.reject(new Error("offline")), snapshot: () => Promise.reject(new Error("offline")) };
  const room = new Room<unknown, { n: number }>("r", link, () => undefined);
  const peer = (id: string, n = 0) => ({ id, user: id.split(".")[0] ?? id, meta: null, state: { n } });
  room.apply({ kind: "welcome", room: "r", peer: { id: "me.1", user: "me", meta: null, state: null }, peers: [peer("ann.1")], last_id: null });
  const seen: string[] = [];
  room.on("join", (p) => seen.push(`join ${p.id}`));
  room.on("leave", (p, reason) => seen.push(`leave ${p.id} ${reason}`));
  room.on("state", (p) => seen.push(`state ${p.id} ${p.state.n}`));
  room.apply({
    kind: "presence",
    room: "r",
    events: [
      { kind: "join", room: "r", peer: peer("me.1") },
      { kind: "join", room: "r", peer: peer("ann.1") },
      { kind: "join", room: "r", peer: peer("bob.1") },
      { kind: "state", room: "r", peer: { id: "bob.1" }, state: { n: 2 } },
      { kind: "leave", room: "r", peer: { id: "ann.1" }, reason: "closed" },
      { kind: "leave", room: "r", peer: { id: "zed.1" }, reason: "timeout" },
    ],
  });
  assert.deepEqual(seen, ["join bob.1", "state bob.1 2", "leave ann.1 closed"]);
  assert.deepEqual([...room.peers.keys()], ["bob.1"]);
});
