import type { IdempotencyEvent, IdempotencyOptions, IdempotencyStore } from "@idempotency/core";
import { MemoryStore } from "@idempotency/core";

/** Options on a fresh MemoryStore that record every event. */
export function recordingOptions(overrides: Partial<IdempotencyOptions> = {}): {
  options: IdempotencyOptions;
  store: IdempotencyStore;
  events: IdempotencyEvent[];
} {
  const events: IdempotencyEvent[] = [];
  const store = overrides.store ?? new MemoryStore();
  return {
    store,
    events,
    options: { store, scope: "global", onEvent: (event) => events.push(event), ...overrides },
  };
}

/** The stored fingerprint of the first claimed record. */
export async function claimedFingerprint(
  store: IdempotencyStore,
  events: IdempotencyEvent[],
): Promise<string> {
  const claimed = events.find((event) => event.type === "claimed");
  if (!claimed) throw new Error("no request was claimed");
  const record = await store.get(claimed.key);
  if (!record) throw new Error("the claimed record is gone");
  return record.fingerprint;
}

/** Resolves when `server` holds no connection any more (it noticed every client disconnect). */
export async function untilNoConnections(server: {
  getConnections(cb: (error: Error | null, count: number) => void): void;
}): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const count = await new Promise<number>((resolve, reject) =>
      server.getConnections((error, n) => (error ? reject(error) : resolve(n))),
    );
    if (count === 0) return;
    if (Date.now() > deadline) throw new Error(`the server still holds ${count} connection(s)`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
