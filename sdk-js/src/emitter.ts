/** A tiny typed event emitter (no dependencies). */
type AnyListener = (...args: unknown[]) => void;

/** Reports an error thrown by a listener without stopping the others: as an
 * uncaught error where the platform has `reportError` (browsers: it reaches
 * `window.onerror` and the console), on the console otherwise. */
function report(error: unknown): void {
  const reportError = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof reportError === "function") reportError(error);
  else console.error("edgewire: a listener threw", error);
}

export class Emitter<Events extends Record<string, unknown[]>> {
  private listeners = new Map<keyof Events, Set<AnyListener>>();

  /** Calls `listener` for every `name` event; returns a function that stops it. */
  on<K extends keyof Events>(name: K, listener: (...args: Events[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    const stored = listener as unknown as AnyListener;
    set.add(stored);
    return () => {
      set.delete(stored);
    };
  }

  /** Calls every listener of `name`; one that throws is reported and the
   * rest still run, so an app's bug never stops the SDK's own handling. */
  protected emit<K extends keyof Events>(name: K, ...args: Events[K]): void {
    for (const listener of [...(this.listeners.get(name) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        report(error);
      }
    }
  }
}
