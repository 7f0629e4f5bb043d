/** Browser end-to-end: two pages of the example app in Debian's chromium
 * (driven by playwright-core; no browser download) join one room, see each
 * other by the names they chose and chat; then the same through a proxy that
 * refuses WebSocket upgrades, so both pages run on SSE + POST; then every
 * error a user can cause shows in the page's banner with the SDK's code.
 * Screenshots (PNG) are kept in a temporary folder printed at the start. */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { type Browser, type BrowserContext, type Page, chromium } from "playwright-core";

import { ROOT, type RunningRelay, SECRET, freePort, mint, startRelay } from "./support.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SDK = path.join(ROOT, "sdk-js");
let relay: RunningRelay;
let browser: Browser;
const servers: http.Server[] = [];
/** Where the screenshots go: the test's own temporary folder. */
const SHOTS = mkdtempSync(path.join(os.tmpdir(), "edgewire-browser-"));
console.log(`browser test screenshots: ${SHOTS}`);

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

function listen(server: http.Server, port: number): Promise<void> {
  servers.push(server);
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
}

/** Serves sdk-js/ (the example app and the built SDK) as static files. */
async function staticServer(): Promise<string> {
  const port = await freePort();
  const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript", ".json": "application/json" };
  await listen(
    http.createServer((req, res) => {
      const file = path.join(SDK, decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
      if (!file.startsWith(SDK) || !existsSync(file)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
      createReadStream(file).pipe(res);
    }),
    port,
  );
  return `http://127.0.0.1:${port}`;
}

/** A proxy in front of the relay that refuses every WebSocket upgrade (as some
 * corporate proxies do) and passes everything else, streams included. */
async function noWebSocketProxy(target: string): Promise<string> {
  const port = await freePort();
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    // When the browser goes away, so does the upstream stream (as with real proxies).
    res.on("close", () => forward.destroy());
    req.pipe(forward);
  });
  server.on("upgrade", (_req, socket) => socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"));
  await listen(server, port);
  return `http://127.0.0.1:${port}`;
}

before(async () => {
  relay = await startRelay();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  await relay?.stop();
});

/** The example app's URL for these query parameters. */
function appUrl(site: string, params: Record<string, string>): string {
  return `${site}/examples/chat/index.html?${new URLSearchParams(params).toString()}`;
}

async function twoPagesChat(relayUrl: string, room: string, expectTransport: "websocket" | "sse"): Promise<void> {
  const site = await staticServer();
  const open = async (name: string) => {
    const page = await browser.newPage();
    // The token's user differs from the chosen name, so the page must show
    // the name from presence state, its own entry included.
    const token = mint(`user-${name.toLowerCase()}`, [`${room}=read,write`]);
    await page.goto(appUrl(site, { relay: relayUrl, token, room, name, retryWs: "0" }));
    await page.waitForSelector("body[data-ready='1']", { timeout: 15_000 });
    return page;
  };
  const ada = await open("Ada");
  const bob = await open("Bob");
  try {
    for (const page of [ada, bob]) {
      assert.equal(await page.textContent("#transport"), expectTransport);
    }
    // Each page lists itself by its chosen name, not the token's user.
    await ada.waitForFunction(() => document.querySelector("#peers")?.textContent?.includes("Ada (you)"), null, { timeout: 15_000 });
    await bob.waitForFunction(() => document.querySelector("#peers")?.textContent?.includes("Bob (you)"), null, { timeout: 15_000 });
    // Presence: each page lists the other by the name in its presence state.
    await ada.waitForFunction(() => document.querySelector("#peers")?.textContent?.includes("Bob"), null, { timeout: 15_000 });
    await bob.waitForFunction(() => document.querySelector("#peers")?.textContent?.includes("Ada"), null, { timeout: 15_000 });
    // Messages both ways, typed and sent like a person would.
    await ada.fill("#text", "hello from Ada");
    await ada.press("#text", "Enter");
    await bob.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("Ada: hello from Ada"), null, { timeout: 15_000 });
    await bob.fill("#text", "hi Ada");
    await bob.click("button");
    await ada.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("Bob: hi Ada"), null, { timeout: 15_000 });
    for (const page of [ada, bob]) {
      const peers = (await page.textContent("#peers")) ?? "";
      assert.ok(!peers.includes("user-"), `a token user is shown instead of a name: ${peers}`);
      assert.equal(await page.isVisible("#error"), false, "no error banner on a working page");
    }
    await shot(ada, `${expectTransport}-ada`);
    await shot(bob, `${expectTransport}-bob`);
    // Leaving: Bob's tab closes, Ada's list drops him.
    await bob.close();
    await ada.waitForFunction(() => !document.querySelector("#peers")?.textContent?.includes("Bob"), null, { timeout: 15_000 });
  } finally {
    await ada.close();
    if (!bob.isClosed()) await bob.close();
  }
}

test("two browser pages of the example app meet over WebSocket", async () => {
  await twoPagesChat(relay.base, "e2e-ws", "websocket");
});

test("the same pages run on SSE + POST when a proxy refuses WebSocket upgrades", async () => {
  const proxy = await noWebSocketProxy(relay.base);
  await twoPagesChat(proxy, "e2e-sse", "sse");
});

/** An HS256 token signed with the fixture secret whose `exp` is an hour ago,
 * well past the relay's 30 s leeway. */
function expiredToken(sub: string, room: string): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, rooms: { [room]: ["read", "write"] }, iat: now - 7200, exp: now - 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

test("the example app shows every error a user can cause, with the SDK's code", async () => {
  const site = await staticServer();
  const room = "e2e-errors";
  const nowhere = `http://127.0.0.1:${await freePort()}`;
  const cases: { name: string; params: Record<string, string>; code: string }[] = [
    { name: "no-token", params: { relay: relay.base, room }, code: "token_missing" },
    { name: "invalid-token", params: { relay: relay.base, room, token: "not.a.token" }, code: "token_invalid" },
    { name: "expired-token", params: { relay: relay.base, room, token: expiredToken("late", room) }, code: "token_expired" },
    { name: "forbidden-room", params: { relay: relay.base, room, token: mint("nosy", ["elsewhere=read,write"]) }, code: "forbidden" },
    { name: "unreachable-relay", params: { relay: nowhere, room, token: mint("lost", [`${room}=read,write`]) }, code: "unreachable" },
  ];
  for (const c of cases) {
    const page = await browser.newPage();
    try {
      await page.goto(appUrl(site, { ...c.params, name: "Eve", retryWs: "0" }));
      await page.waitForSelector("#error:not([hidden])", { timeout: 15_000 });
      await page.waitForFunction((code) => document.querySelector("#error-code")?.textContent === code, c.code, { timeout: 15_000 });
      const message = (await page.textContent("#error-message")) ?? "";
      assert.ok(message.length > 10, `${c.name}: the banner has a message: ${message}`);
      assert.equal(await page.getAttribute("body", "data-ready"), null, `${c.name}: the room never became ready`);
      await shot(page, `error-${c.name}`);
    } finally {
      await page.close();
    }
  }
});

test("the React example: two pages under StrictMode see each other and chat", async () => {
  const esbuild = await import("esbuild");
  await esbuild.build({
    entryPoints: [path.join(SDK, "examples/react/app.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    outfile: path.join(SDK, "build-test/react-app.js"),
    define: { "process.env.NODE_ENV": '"development"' },
    logLevel: "silent",
  });
  const site = await staticServer();
  const room = "e2e-react";
  const open = async (name: string) => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const token = mint(`user-${name.toLowerCase()}`, [`${room}=read,write`]);
    const query = new URLSearchParams({ relay: relay.base, token, room, name });
    await page.goto(`${site}/examples/react/index.html?${query.toString()}`);
    return { page, errors };
  };
  const ada = await open("Ada");
  const bob = await open("Bob");
  try {
    // Presence from usePresence: each page lists both chosen names.
    for (const { page } of [ada, bob]) {
      await page.waitForFunction(() => {
        const text = document.querySelector("#peers")?.textContent ?? "";
        return text.includes("Ada") && text.includes("Bob");
      }, null, { timeout: 15_000 });
    }
    await ada.page.fill("#text", "hello from React");
    await ada.page.press("#text", "Enter");
    await bob.page.waitForFunction(() => document.querySelector("#log")?.textContent?.includes("Ada: hello from React"), null, { timeout: 15_000 });
    // StrictMode mounted everything twice: still one entry per page.
    const items = await ada.page.$$eval("#peers li", (lis) => lis.map((li) => li.textContent));
    assert.deepEqual([...items].sort(), ["Ada", "Bob"], "each page once in presence");
    assert.deepEqual([...ada.errors, ...bob.errors], [], "no errors in the pages");
    await shot(ada.page, "react-ada");
    // Leaving: Bob's page closes, Ada's list drops him.
    await bob.page.close();
    await ada.page.waitForFunction(() => !document.querySelector("#peers")?.textContent?.includes("Bob"), null, { timeout: 15_000 });
  } finally {
    await ada.page.close();
    if (!bob.page.isClosed()) await bob.page.close();
  }
});

/** Live sessions at the relay, WebSocket and SSE. */
async function relaySessions(): Promise<number> {
  const text = await (await fetch(`${relay.base}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("edgewire_sessions{"))
    .reduce((sum, l) => sum + Number(l.split(" ")[1] ?? "0"), 0);
}

async function untilTrue(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Bundles the tabs example (page and shared worker) into build-test/. */
async function bundleTabsExample(): Promise<void> {
  const esbuild = await import("esbuild");
  for (const name of ["app", "worker"]) {
    await esbuild.build({
      entryPoints: [path.join(SDK, `examples/tabs/${name}.ts`)],
      bundle: true,
      format: "esm",
      target: "es2022",
      outfile: path.join(SDK, `build-test/tabs-${name}.js`),
      logLevel: "silent",
    });
  }
}

type TabGlobals = {
  edgewireSend(t: string): Promise<string>;
  edgewireLeave(): void;
  edgewireHandle(method: string, answer: string): void;
  edgewireRequest(peer: string, method: string): Promise<unknown>;
};
const logOf = (page: Page) => page.$$eval("#log li", (lis) => lis.map((li) => li.textContent ?? ""));

/** Opens `count` pages of the tabs example in `context`, each welcomed. */
async function openTabs(context: BrowserContext, url: string, count: number): Promise<Page[]> {
  const pages: Page[] = [];
  for (let i = 0; i < count; i++) {
    const page = await context.newPage();
    await page.goto(url);
    await page.waitForSelector("body[data-ready='1']", { state: "attached", timeout: 15_000 });
    pages.push(page);
  }
  return pages;
}

/** Three pages of the tabs example in a new browser context, sharing in
 * `mode`: each is welcomed, the relay holds one session for all three, and
 * each page's message reaches every page. */
async function threeSharingTabs(mode: "worker" | "locks", room: string): Promise<{ context: BrowserContext; pages: Page[]; url: string }> {
  await bundleTabsExample();
  const site = await staticServer();
  const token = mint("tabs", [`${room}=read,write`]);
  const url = `${site}/examples/tabs/index.html?${new URLSearchParams({ relay: relay.base, token, room, mode }).toString()}`;
  await untilTrue(async () => (await relaySessions()) === 0, "sessions of earlier tests are gone");
  const context = await browser.newContext();
  const pages = await openTabs(context, url, 3);
  assert.deepEqual(await Promise.all(pages.map((p) => p.getAttribute("body", "data-mode"))), [mode, mode, mode]);
  await untilTrue(async () => (await relaySessions()) === 1, "one relay session for three tabs");
  for (const [i, page] of pages.entries()) await page.evaluate((n) => (globalThis as unknown as TabGlobals).edgewireSend(`from-${n}`), i);
  for (const page of pages) {
    await untilTrue(async () => (await logOf(page)).length >= 3, "three messages in every tab");
    assert.deepEqual([...(await logOf(page))].sort(), ["from-0", "from-1", "from-2"]);
  }
  return { context, pages, url };
}

test("three tabs share one relay connection held by a SharedWorker: each sends, receives and answers requests", async () => {
  const { context, pages, url } = await threeSharingTabs("worker", "e2e-tabs-worker");
  const other = await browser.newContext();
  try {
    // Another browser (its own tab, its own connection) sees this one once,
    // and its requests reach the tab that handles them.
    const selves = new Set(await Promise.all(pages.map((p) => p.getAttribute("body", "data-self"))));
    assert.equal(selves.size, 1, "one peer for the browser, whichever tab asks");
    const [browserPeer] = [...selves];
    await pages[1]?.evaluate(() => (globalThis as unknown as TabGlobals).edgewireHandle("whoami", "tab-1"));
    const [stranger] = await openTabs(other, url.replace("mode=worker", "mode=alone"), 1);
    assert.ok(stranger);
    assert.equal(await stranger.getAttribute("body", "data-mode"), "alone");
    await untilTrue(async () => (await relaySessions()) === 2, "one session per browser");
    const answer = await stranger.evaluate((peer) => (globalThis as unknown as TabGlobals).edgewireRequest(peer, "whoami"), browserPeer ?? "");
    assert.equal(answer, "tab-1");

    // The worker outlives the tab that started it: the others go on, once.
    await pages.shift()?.close();
    await stranger.evaluate(() => (globalThis as unknown as TabGlobals).edgewireSend("after-close"));
    for (const page of pages) {
      await untilTrue(async () => (await logOf(page)).includes("after-close"), "the message after a tab closed");
      assert.equal((await logOf(page)).filter((m) => m === "after-close").length, 1);
    }
    assert.equal(await relaySessions(), 2, "still one session for the browser");
  } finally {
    await context.close();
    await other.close();
  }
});

test("three tabs share one relay connection by Web Locks, and the leader's close loses and doubles nothing", async () => {
  const room = "e2e-tabs";
  const { context, pages } = await threeSharingTabs("locks", room);
  try {
    assert.equal(await relaySessions(), 1, "still one session");

    // The leading tab closes; messages published meanwhile reach the others once, in order.
    const leaders = await Promise.all(pages.map((p) => p.getAttribute("body", "data-leader")));
    const leaderAt = leaders.indexOf("1");
    assert.ok(leaderAt >= 0, `one tab leads: ${leaders.join(",")}`);
    const [leader] = pages.splice(leaderAt, 1);
    // The remaining tabs are offline while the leader goes and messages are
    // published: the new leader must resume from where the tabs were.
    await context.setOffline(true);
    await leader?.close();
    const writer = mint("writer", [`${room}=write`]);
    for (let k = 0; k < 5; k++) {
      const res = await fetch(`${relay.base}/rooms/${room}`, { method: "POST", headers: { authorization: `Bearer ${writer}` }, body: `after-${k}` });
      assert.equal(res.status, 202);
    }
    await context.setOffline(false);
    const expected = ["after-0", "after-1", "after-2", "after-3", "after-4"];
    for (const page of pages) {
      await untilTrue(async () => (await logOf(page)).filter((m) => m.startsWith("after-")).length >= 5, `the messages after the hand-over in every remaining tab: ${JSON.stringify(await Promise.all(pages.map(logOf)))} leaders ${JSON.stringify(await Promise.all(pages.map((p) => p.getAttribute("body", "data-leader"))))}`);
      assert.deepEqual((await logOf(page)).filter((m) => m.startsWith("after-")), expected, "each once, in order");
    }
    await untilTrue(async () => (await Promise.all(pages.map((p) => p.getAttribute("body", "data-leader")))).includes("1"), "another tab leads");
    await untilTrue(async () => (await relaySessions()) === 1, "one relay session again");

    // The browser is one peer; it leaves the room when its last tab does.
    const reader = mint("reader", [`${room}=read`]);
    const present = async () => {
      const res = await fetch(`${relay.base}/rooms/${room}`, { headers: { accept: "application/json", authorization: `Bearer ${reader}` } });
      return ((await res.json()) as { peers: unknown[] }).peers.length;
    };
    await untilTrue(async () => (await present()) === 1, "the browser present once");
    const leave = (page: Page) => page.evaluate(() => (globalThis as unknown as TabGlobals).edgewireLeave());
    await leave(pages[0] as Page);
    // A check that nothing happens: a short wait cannot fail a slow run.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await present(), 1, "still present while a tab holds the room");
    await leave(pages[1] as Page);
    await untilTrue(async () => (await present()) === 0, "gone once the last tab left");
  } finally {
    await context.close();
  }
});
