import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

import { CLOSE_CODES, ERROR_CODES, Edgewire, backoffDelay, closePolicy, topicMatches } from "../src/index.js";
import type { WebSocketLike } from "../src/index.js";
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
