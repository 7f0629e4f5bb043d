// Typed usage of the SDK, compiled under `--strict` with the tests and never
// run: every value an app sees has a type, with no casts (a unit test reads
// this file and fails on `as`).
import { Edgewire, RelayError } from "../src/index.js";
import type { LeaveReason, Message, PeerInfo, RelayEvent, StatusEvent } from "../src/index.js";

type Chat = { text: string; at: number };
type Presence = { name: string; typing: boolean };

export async function typedUsage(): Promise<string[]> {
  const client = new Edgewire("https://relay.example", { token: () => "jwt" });
  const room = client.join<Chat, Presence>("lobby", { state: { name: "ada", typing: false } });
  const seen: string[] = [];

  room.on("message", (m: Message<Chat>) => seen.push(`${m.from}: ${m.data.text} @${m.data.at}`));
  room.on("join", (p: PeerInfo<Presence>) => seen.push(`${p.state.name} joined`));
  room.on("leave", (p: PeerInfo<Presence>, why: LeaveReason) => seen.push(`${p.id} left (${why})`));
  room.on("state", (p) => seen.push(`${p.state.name} is ${p.state.typing ? "typing" : "idle"}`));
  room.on("status", (s: StatusEvent) => seen.push(`${s.topic} = ${JSON.stringify(s.data)}`));
  client.on("error", (e: Error) => seen.push(e instanceof RelayError ? `${e.code} (retry in ${e.retryAfter ?? 0}s)` : e.message));
  client.on("state", (state) => seen.push(state));

  await room.ready;
  const id: string = await room.send("chat", { text: "hi", at: Date.now() });
  await room.setState({ name: "ada", typing: true });
  await room.retain("device/status/sn-1", "online", { ttl: 30 });
  const me: PeerInfo<Presence> | undefined = room.self;
  for (const peer of room.peers.values()) seen.push(peer.state.name);
  const stop = room.watch("device/status/+", (s) => seen.push(s.topic));
  stop();
  seen.push(id, me?.state.name ?? "", room.lastId ?? "");
  return seen;
}

/** Relay events narrow on `kind`: every field is typed, no casts. */
export function describe(event: RelayEvent): string {
  switch (event.kind) {
    case "welcome":
      return `welcome ${event.peer.id} with ${event.peers?.length ?? 0} others`;
    case "message":
      return `message ${event.id} from ${event.from}`;
    case "status":
      return `status ${event.topic} retained=${event.retained}`;
    case "join":
      return `join ${event.peer.user}`;
    case "leave":
      return `leave ${event.peer.id}: ${event.reason}`;
    case "state":
      return `state of ${event.peer.id}`;
    case "presence":
      return `presence ${event.events.map((e) => `${e.kind} ${e.peer.id}`).join(", ")}`;
    case "ack":
      return `ack ${event.ref ?? "-"} ${event.id ?? ""}`;
    case "error":
      return `error ${event.code}: ${event.message}`;
    case "reset":
      return `reset ${event.room}: ${event.reason}`;
    case "pong":
      return "pong";
    case "expiring":
      return `expiring in ${event.in}s`;
  }
}
