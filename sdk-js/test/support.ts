/** Test support: the real relay binary on a free port, tokens from
 * `edgewire token`, and waiting on conditions with deadlines. */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { type Socket, connect, createServer } from "node:net";
import path from "node:path";

import { ROOT, relayBinary } from "./binary.js";

export { ROOT };
/** The relay binary the test command built (see binary.ts). */
export const BIN = relayBinary();
export const SECRET = readFileSync(path.join(ROOT, "fixtures/keys/hs.secret"), "utf8");
export const DEADLINE_MS = 10_000;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

export interface RunningRelay {
  base: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `edgewire serve` with the fixture secret; resolves once it answers. */
export async function startRelay(env: Record<string, string> = {}, port?: number): Promise<RunningRelay> {
  const p = port ?? (await freePort());
  const child = spawn(BIN, ["serve"], {
    env: { ...process.env, EDGEWIRE_LISTEN: `127.0.0.1:${p}`, EDGEWIRE_JWT_SECRET: SECRET, EDGEWIRE_LOG: "warn", EDGEWIRE_PUBLISH_RATE: "100000", ...env },
    stdio: "ignore",
  });
  const base = `http://127.0.0.1:${p}`;
  await until(async () => {
    try {
      return (await fetch(`${base}/readyz`)).ok || undefined;
    } catch {
      return undefined;
    }
  });
  return {
    base,
    process: child,
    stop: (signal = "SIGTERM") =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill(signal);
      }),
  };
}

/** Starts a redis-server on a free port (installed by the test command). */
export async function startRedis(): Promise<{ url: string; stop(): void }> {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await until(async () => {
    try {
      const { Socket } = await import("node:net");
      return await new Promise<true | undefined>((resolve) => {
        const s = new Socket();
        s.once("connect", () => (s.destroy(), resolve(true)));
        s.once("error", () => resolve(undefined));
        s.connect(port, "127.0.0.1");
      });
    } catch {
      return undefined;
    }
  });
  return { url: `redis://127.0.0.1:${port}/`, stop: () => void child.kill("SIGKILL") };
}

/** A token signed with the fixture secret, by the relay's own CLI. */
export function mint(sub: string, rooms: string[], ttl = "1h"): string {
  const args = ["token", "--sub", sub, "--ttl", ttl, ...rooms.flatMap((r) => ["--room", r])];
  return execFileSync(BIN, args, { env: { ...process.env, EDGEWIRE_JWT_SECRET: SECRET } }).toString().trim();
}

/** Polls `check` until it returns a value, failing after the deadline. */
export async function until<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = DEADLINE_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value as T;
    if (Date.now() > deadline) throw new Error("condition not met before the deadline");
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A TCP proxy in front of a relay that can swallow the relay's replies and
 * cut every connection: a write that was stored but never answered. */
export interface Proxy {
  base: string;
  /** While true, bytes from the relay are dropped. */
  muted: boolean;
  /** Closes every proxied connection at once. */
  cut(): void;
  close(): void;
}

export async function startProxy(target: string): Promise<Proxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const proxy: Proxy = {
    base: "",
    muted: false,
    cut: () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close: () => {
      proxy.cut();
      server.close();
    },
  };
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(client);
    sockets.add(upstream);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d) => {
      if (!proxy.muted) client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const address = server.address();
  proxy.base = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  return proxy;
}
