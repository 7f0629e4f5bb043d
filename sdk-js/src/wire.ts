/** Reading the relay's frames. */
import type { RelayEvent } from "./protocol.js";

/** A frame's JSON as a relay event: `undefined` for anything that is not an
 * object with a `kind` (not from a relay). */
export function parseEvent(text: string): RelayEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || typeof (value as { kind?: unknown }).kind !== "string") return undefined;
  return value as RelayEvent;
}
