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

  /** Calls `listener` for every `name` event until the returned function
   * is called or `options.signal` aborts. */
  on<K extends keyof Events>(name: K, listener: (...args: Events[K]) => void, options: { signal?: AbortSignal } = {}): () => void {
    const { signal } = options;
    if (signal?.aborted) return () => undefined;
    let set = this.listeners.get(name);
    if (!set) {
      set = new Set();
      this.listeners.set(name, set);
    }
    const stored = listener as unknown as AnyListener;
    set.add(stored);
    const stop = () => {
      set.delete(stored);
      signal?.removeEventListener("abort", stop);
    };
    signal?.addEventListener("abort", stop, { once: true });
    return stop;
  }

  /** The `name` events as an async iterator (of each event's first
   * argument), until `signal` aborts or the loop breaks. At most `buffer`
   * events (default 1,000) wait for a slow loop: past that the iterator
   * throws rather than hold memory without bound. */
  iterate<K extends keyof Events>(name: K, options: { signal?: AbortSignal; buffer?: number } = {}): AsyncIterableIterator<Events[K][0]> {
    const limit = options.buffer ?? 1000;
    const waiting: Events[K][0][] = [];
    let wake: (() => void) | undefined;
    let failure: Error | undefined;
    let done = false;
    const stop = this.on(
      name,
      (...args: Events[K]) => {
        if (waiting.length >= limit) failure ??= new Error(`more than ${limit} ${String(name)} events waited for the loop`);
        else waiting.push(args[0]);
        wake?.();
      },
      { signal: options.signal },
    );
    const finish = () => {
      done = true;
      stop();
      wake?.();
    };
    options.signal?.addEventListener("abort", finish, { once: true });
    if (options.signal?.aborted) finish();
    const iterator: AsyncIterableIterator<Events[K][0]> = {
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        for (;;) {
          if (failure) {
            finish();
            throw failure;
          }
          if (waiting.length > 0) return { value: waiting.shift() as Events[K][0], done: false };
          if (done) return { value: undefined, done: true };
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
      },
      return: async () => {
        finish();
        return { value: undefined, done: true };
      },
    };
    return iterator;
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
