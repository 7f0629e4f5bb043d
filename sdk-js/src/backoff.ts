/** Exponential backoff with full jitter: a random delay up to
 * `min(cap, base * 2^attempt)`. Pure, so tests can pass their own `random`. */
export function backoffDelay(
  attempt: number,
  options: { baseMs?: number; capMs?: number } = {},
  random: () => number = Math.random,
): number {
  const base = options.baseMs ?? 500;
  const cap = options.capMs ?? 30_000;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
