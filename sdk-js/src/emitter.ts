/** A tiny typed event emitter (no dependencies). */
type AnyListener = (...args: unknown[]) => void;

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

  protected emit<K extends keyof Events>(name: K, ...args: Events[K]): void {
    for (const listener of this.listeners.get(name) ?? []) listener(...args);
  }
}
