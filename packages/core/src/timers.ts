/** Resolves after `ms`, on the timers vitest's fake clock moves. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
