/**
 * Exponential backoff with full jitter: a uniformly random delay in `[0, min(maxDelayMs, baseDelayMs · 2^n))`,
 * where `n` counts the retries before this one (0 before the first). Full jitter spreads the retries of many
 * clients that failed together, so they do not return in lockstep.
 */
export function backoffDelay(
  n: number,
  baseDelayMs: number,
  maxDelayMs: number,
  random: () => number,
): number {
  const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** n);
  const r = random();
  // A random() outside [0, 1) must not produce a negative delay or one above the ceiling.
  const fraction = r >= 0 && r < 1 ? r : r >= 1 ? 1 : 0;
  return Math.floor(fraction * ceiling);
}
