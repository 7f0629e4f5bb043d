/** Browser end-to-end: two pages of the example app in Debian's chromium
 * (driven by playwright-core; no browser download) join one room, see each
 * other and chat; then the same through a proxy that refuses WebSocket
 * upgrades, so both pages run on SSE + POST. */
import assert from "node:assert/strict";
import { createReadStream, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, test } from "node:test";

import { type Browser, chromium } from "playwright-core";

import { ROOT, type RunningRelay, freePort, mint, startRelay } from "./support.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SDK = path.join(ROOT, "sdk-js");
let relay: RunningRelay;
let browser: Browser;
const servers: http.Server[] = [];

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

async function twoPagesChat(relayUrl: string, room: string, expectTransport: "websocket" | "sse"): Promise<void> {
  const site = await staticServer();
  const open = async (name: string) => {
    const page = await browser.newPage();
    const token = mint(name, [`${room}=read,write`]);
    const url = `${site}/examples/chat/index.html?relay=${encodeURIComponent(relayUrl)}&token=${token}&room=${room}&name=${name}&retryWs=0`;
    await page.goto(url);
    await page.waitForSelector("body[data-ready='1']", { timeout: 15_000 });
    return page;
  };
  const ada = await open("Ada");
  const bob = await open("Bob");
  try {
    for (const page of [ada, bob]) {
      assert.equal(await page.textContent("#transport"), expectTransport);
    }
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
