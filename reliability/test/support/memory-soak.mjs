// The MemoryStore soak, in its own process (forked with --expose-gc, so heap figures are after a full GC).
// The parent forks it with one JSON argument { keys, batch, chunk, maxEntries } and gets one message back.
//
// 1. Through the engine: `keys` distinct keys through `idempotency.run()` on a MemoryStore bounded by
//    `maxEntries`, in batches of `batch` calls; each batch alternates chunks of `chunk` integer-like keys
//    ("0", "1", …) and chunks of prefixed keys ("k0", "k1", …). After each batch: the store's size, the heap
//    after GC, and the median time per call of each kind of chunk.
// 2. Straight into the store: the same with raw store keys (begin then complete), since the engine hashes
//    every key and integer-like strings then never reach the store's maps; a user's own use of the store
//    (or a store-level test) does pass them.
import { createIdempotency, MemoryStore } from "@idempotency/core";

const { keys, batch, chunk, maxEntries } = JSON.parse(process.argv[2]);

function heap() {
  globalThis.gc();
  globalThis.gc();
  const { heapUsed, external, arrayBuffers } = process.memoryUsage();
  return heapUsed + external + arrayBuffers;
}

const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];

async function soak(name, call, store) {
  const empty = heap();
  const batches = [];
  let integerLike = 0;
  let prefixed = 0;
  for (let done = 0; done < keys; done += batch) {
    const times = { integerLike: [], prefixed: [] };
    for (let offset = 0; offset < batch; offset += chunk) {
      const kind = (offset / chunk) % 2 === 0 ? "integerLike" : "prefixed";
      const started = performance.now();
      for (let i = 0; i < chunk; i++) {
        const key = kind === "integerLike" ? String(integerLike++) : `k${prefixed++}`;
        await call(key);
      }
      times[kind].push(((performance.now() - started) * 1000) / chunk);
    }
    batches.push({
      calls: done + batch,
      size: store.size,
      heapBytes: heap(),
      integerLikeMicros: median(times.integerLike),
      prefixedMicros: median(times.prefixed),
    });
  }
  return { name, emptyHeapBytes: empty, batches };
}

// Warm-up on a store of its own, so JIT compilation does not land in the first measured batch.
async function warmUp(call) {
  for (let i = 0; i < 20_000; i++) await call(i % 2 ? String(i) : `w${i}`);
}

const results = [];
{
  const warmStore = new MemoryStore({ maxEntries });
  const warm = createIdempotency({ store: warmStore, scope: "global" });
  await warmUp((key) => warm.run(key, async () => ({ ok: key })));
  await warmStore.close();

  const store = new MemoryStore({ maxEntries });
  const idempotency = createIdempotency({ store, scope: "global" });
  let executions = 0;
  const run = (key) =>
    idempotency.run(key, async () => {
      executions++;
      return { ok: key };
    });
  const result = await soak("engine", run, store);
  // The records the bound kept are still replayed, the evicted ones run again: the last key of each kind
  // replays (no new execution), the first of each kind was evicted long ago and runs again.
  const before = executions;
  await run(String(keys / 2 - 1));
  await run(`k${keys / 2 - 1}`);
  const replayedExecutions = executions - before;
  await run("0");
  await run("k0");
  const evictedExecutions = executions - before - replayedExecutions;
  results.push({ ...result, executions: before, replayedExecutions, evictedExecutions });
  await store.close();
}
{
  const args = (token) => ({
    token,
    fingerprint: "f",
    leaseMs: 30_000,
    ttlMs: 86_400_000,
    allowTakeover: true,
  });
  const response = new Uint8Array(64);
  const warmStore = new MemoryStore({ maxEntries });
  await warmUp(async (key) => {
    await warmStore.begin(key, args(key));
    await warmStore.complete(key, key, response, 86_400_000);
  });
  await warmStore.close();

  const store = new MemoryStore({ maxEntries });
  let claimed = 0;
  const put = async (key) => {
    const begun = await store.begin(key, args(key));
    if (begun.state === "claimed" && (await store.complete(key, key, response, 86_400_000))) claimed++;
  };
  const result = await soak("store", put, store);
  results.push({ ...result, executions: claimed });
  await store.close();
}

process.send({ results });
