/** React bindings (`edgewire/react`): a provider for one client, and hooks
 * that read a room through `useSyncExternalStore`, so every render sees one
 * consistent value. Rooms are counted per client: StrictMode's unmount and
 * remount, or two components on one room, join it once and leave it when
 * the last one goes. */
import { type ReactNode, createContext, createElement, useCallback, useContext, useEffect, useRef, useSyncExternalStore } from "react";

import type { Edgewire } from "../client.js";
import { topicMatches } from "../filter.js";
import type { Message, PeerInfo, StatusEvent } from "../protocol.js";
import type { Room } from "../room.js";

const ClientContext = createContext<Edgewire | null>(null);

/** Makes `client` the one the hooks below use. */
export function EdgewireProvider(props: { client: Edgewire; children?: ReactNode }): ReactNode {
  return createElement(ClientContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest `EdgewireProvider`. */
export function useEdgewire(): Edgewire {
  const client = useContext(ClientContext);
  if (!client) throw new Error("edgewire/react: use the hooks inside <EdgewireProvider client={...}>");
  return client;
}

/** Components holding each room, per client; a room is left a tick after
 * its last holder goes, so an unmount followed at once by a mount keeps it. */
const holders = new WeakMap<Edgewire, Map<string, { count: number; timer?: ReturnType<typeof setTimeout> }>>();

/** Joins `name` while the component is mounted and returns the room. */
export function useRoom<Msg = unknown, State = unknown>(name: string, options: { state?: State } = {}): Room<Msg, State> {
  const client = useEdgewire();
  const room = client.join<Msg, State>(name, { state: options.state });
  useEffect(() => {
    let rooms = holders.get(client);
    if (!rooms) holders.set(client, (rooms = new Map()));
    const hold = rooms.get(name) ?? { count: 0 };
    rooms.set(name, hold);
    hold.count++;
    clearTimeout(hold.timer);
    return () => {
      hold.count--;
      if (hold.count > 0) return;
      hold.timer = setTimeout(() => {
        if (hold.count > 0) return;
        rooms.delete(name);
        void room.leave();
      }, 0);
    };
  }, [client, name, room]);
  return room;
}

/** A value read from a room, re-read when one of `events` (or the room's
 * welcome) happens. */
function useRoomValue<T, M, S>(room: Room<M, S>, events: ("join" | "leave" | "state" | "status" | "reset")[], read: () => T): T {
  const cached = useRef<{ room: unknown; value: T } | null>(null);
  const subscribe = useCallback(
    (changed: () => void) => {
      const again = () => {
        cached.current = null;
        changed();
      };
      const stops = events.map((name) => room.on(name, again));
      let live = true;
      void room.ready.then(() => live && again());
      return () => {
        live = false;
        for (const stop of stops) stop();
      };
    },
    // The events are fixed per hook.
    [room],
  );
  const snapshot = () => {
    if (!cached.current || cached.current.room !== room) cached.current = { room, value: read() };
    return cached.current.value;
  };
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

/** Everyone present, yourself first (once welcomed). */
export function usePresence<Msg, State>(room: Room<Msg, State>): PeerInfo<State>[] {
  return useRoomValue(room, ["join", "leave", "state", "reset"], () => {
    const others = [...room.peers.values()];
    return room.self ? [room.self, ...others] : others;
  });
}

/** A topic's retained value (`undefined` while it has none). */
export function useTopic<Msg, State>(room: Room<Msg, State>, topic: string): StatusEvent | undefined {
  return useRoomValue(room, ["status", "reset"], () => room.topics.get(topic));
}

/** The retained values whose topics match `filter` (`+` one level, `*` the rest). */
export function useRetained<Msg, State>(room: Room<Msg, State>, filter: string): StatusEvent[] {
  return useRoomValue(room, ["status", "reset"], () => [...room.topics.values()].filter((v) => topicMatches(filter, v.topic)));
}

/** The room's latest messages, oldest first, at most `limit` (default 100). */
export function useMessages<Msg, State>(room: Room<Msg, State>, options: { limit?: number } = {}): Message<Msg>[] {
  const limit = options.limit ?? 100;
  const list = useRef<{ room: unknown; messages: Message<Msg>[] }>({ room, messages: [] });
  if (list.current.room !== room) list.current = { room, messages: [] };
  const subscribe = useCallback(
    (changed: () => void) =>
      room.on("message", (m) => {
        list.current = { room, messages: [...list.current.messages, m].slice(-limit) };
        changed();
      }),
    [room, limit],
  );
  const snapshot = () => list.current.messages;
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}
