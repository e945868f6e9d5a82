/**
 * Soak and memory. MemoryStore: 10⁶ distinct keys, half of them integer-like ("0", "1", …, which V8 treats
 * as array indices in plain objects), through the engine's `run()` and straight into the store, bounded by
 * `maxEntries`: the store stays at its bound, the heap after GC stays flat once it is full, and the time per
 * call stays flat, the same for integer-like keys as for the others. SQLite and Redis: a server process
 * under a mixed load (new keys, replays, concurrent duplicates, 422s) for SOAK_SECONDS: every key runs
 * exactly once, and between the end of the warm-up and the end of the load the heap after GC and the RSS
 * stay flat, and the open handles, timers and listeners do not grow.
 *
 * SOAK_SECONDS (default 20, per store) sets the server soak's length; the full run is
 * SOAK_SECONDS=180.
 */
import { fork } from "node:child_process";
import { Agent } from "node:http";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StoreFixture } from "./support/fixture.js";
import { SEED, seeded } from "./support/random.js";
import { report, tally } from "./support/report.js";
import {
  type Binding,
  problemType,
  type Reply,
  ServerProcess,
  type ServerStats,
  send,
  sleep,
} from "./support/servers.js";

const SOAK_SECONDS = Number(process.env.SOAK_SECONDS ?? 20);
const WARM_UP_SECONDS = Math.max(3, Math.round(SOAK_SECONDS * 0.15));
const LOOPS = 8;
const MEMORY_SOAK = fileURLToPath(new URL("./support/memory-soak.mjs", import.meta.url));

const MB = 1_000_000;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1] as number;
const mb = (bytes: number) => (bytes / MB).toFixed(1);

interface MemoryBatch {
  calls: number;
  size: number;
  heapBytes: number;
  integerLikeMicros: number;
  prefixedMicros: number;
}
interface MemoryResult {
  name: "engine" | "store";
  emptyHeapBytes: number;
  batches: MemoryBatch[];
  executions: number;
  replayedExecutions?: number;
  evictedExecutions?: number;
}

describe("MemoryStore: 10⁶ distinct keys", () => {
  const KEYS = 1_000_000;
  const BATCH = 100_000;
  const MAX_ENTRIES = 100_000;

  it("through run() and straight into the store, bounded by maxEntries: size at the bound, heap after GC flat once full, time per call flat and the same for integer-like keys", async () => {
    const started = performance.now();
    const child = fork(
      MEMORY_SOAK,
      [JSON.stringify({ keys: KEYS, batch: BATCH, chunk: 1_000, maxEntries: MAX_ENTRIES })],
      {
        execArgv: ["--expose-gc"],
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    const { results } = await new Promise<{ results: MemoryResult[] }>((resolve, reject) => {
      child.once("message", (message) => resolve(message as { results: MemoryResult[] }));
      child.once("exit", (code) => reject(new Error(`memory soak exited with ${code} before answering`)));
    });
    child.kill();
    const seconds = (performance.now() - started) / 1000;

    for (const result of results) {
      const { batches } = result;
      const first = batches[0] as MemoryBatch;
      const second = batches[1] as MemoryBatch;
      const last = batches[batches.length - 1] as MemoryBatch;
      const bytesPerRecord = (last.heapBytes - result.emptyHeapBytes) / MAX_ENTRIES;
      const integerLike = median(batches.map((b) => b.integerLikeMicros));
      const prefixed = median(batches.map((b) => b.prefixedMicros));
      report(
        `soak/memory/${result.name}`,
        `${KEYS.toLocaleString("en")} distinct keys (half integer-like) ${result.name === "engine" ? "through run()" : "straight into MemoryStore (begin + complete)"}, maxEntries ${MAX_ENTRIES.toLocaleString("en")}, ` +
          `in ${batches.length} batches of ${BATCH.toLocaleString("en")}: size ${tally(batches.map((b) => b.size))}; ` +
          `heap after GC (heap + external + array buffers) ${mb(result.emptyHeapBytes)} MB empty, then ` +
          `${batches.map((b) => mb(b.heapBytes)).join(" ")} MB (${bytesPerRecord.toFixed(0)} B per record); ` +
          `median µs per call, integer-like/other: first batch ${first.integerLikeMicros.toFixed(2)}/${first.prefixedMicros.toFixed(2)}, ` +
          `last ${last.integerLikeMicros.toFixed(2)}/${last.prefixedMicros.toFixed(2)}, over all batches ` +
          `${integerLike.toFixed(2)}/${prefixed.toFixed(2)}; ${result.executions.toLocaleString("en")} executions` +
          (result.name === "engine"
            ? `; the last key of each kind replayed (${result.replayedExecutions} executions), the first ran again after eviction (${result.evictedExecutions})`
            : "") +
          `; the whole memory soak took ${seconds.toFixed(1)} s`,
        // No ledger and no HTTP here: the counts are in the line, not in the run's totals.
      );

      expect(result.executions).toBe(KEYS);
      for (const batch of batches) expect(batch.size).toBe(MAX_ENTRIES);
      // Full after the first batch; from then on evictions keep it at the bound, and memory with it.
      expect(last.heapBytes).toBeLessThanOrEqual(second.heapBytes * 1.15 + 2 * MB);
      expect(bytesPerRecord).toBeLessThan(1_000);
      // Flat: the last batch no slower than 3× the first; integer-like keys take no slow path.
      expect(last.integerLikeMicros).toBeLessThan(3 * first.integerLikeMicros);
      expect(last.prefixedMicros).toBeLessThan(3 * first.prefixedMicros);
      expect(integerLike / prefixed).toBeGreaterThan(0.6);
      expect(integerLike / prefixed).toBeLessThan(1 / 0.6);
    }
    const engine = results.find((result) => result.name === "engine") as MemoryResult;
    expect(engine.replayedExecutions).toBe(0);
    expect(engine.evictedExecutions).toBe(2);
  });
});

describe.each([
  ["sqlite", "express"],
  ["redis", "fastify"],
] as const)("a %s store under a mixed load for SOAK_SECONDS (%s)", (storeKind, binding: Binding) => {
  let fixture: StoreFixture;
  let server: ServerProcess;

  beforeAll(async () => {
    fixture = await StoreFixture.open(storeKind, "soak");
    server = await ServerProcess.start({ binding, ...fixture.config() }, `${binding}#soak`, ["--expose-gc"]);
  });

  afterAll(async () => {
    await server?.stop();
    await fixture?.close();
  });

  it(
    `new keys, replays, concurrent duplicates and 422s: each key runs once; heap after GC and RSS flat, no growth in handles, timers or listeners`,
    async () => {
      const random = seeded(SEED);
      const agent = new Agent({ keepAlive: true, maxSockets: LOOPS });
      const prefix = `${storeKind}-soak-${SEED}`;
      const completed: Array<{ key: string; body: string; reply: Buffer }> = [];
      const outcomes: string[] = [];
      const failures: string[] = [];
      const latencies: Array<{ at: number; ms: number }> = [];
      let newKeys = 0;
      let requests = 0;
      const bodyOf = (key: string) => JSON.stringify({ key, amount: 100 });
      const post = async (key: string, body: string, handlerMs?: number) => {
        requests++;
        const reply = await send({ port: server.port, key, body, agent, handlerMs });
        latencies.push({ at: performance.now(), ms: reply.ms });
        return reply;
      };
      const expectThat = (ok: boolean, what: string, reply: Reply) => {
        if (!ok) failures.push(`${what}: ${reply.status} ${reply.body.toString("utf8").slice(0, 200)}`);
      };

      /** One operation of the mix: 40 % new key, 30 % replay, 15 % two concurrent duplicates, 15 % 422. */
      async function operation(): Promise<void> {
        const pick = random();
        if (pick < 0.4 || completed.length === 0) {
          const key = `${prefix}-${newKeys++}`;
          const reply = await post(key, bodyOf(key));
          outcomes.push("new");
          expectThat(reply.status === 201 && !reply.headers["idempotent-replayed"], "new key", reply);
          completed.push({ key, body: bodyOf(key), reply: reply.body });
        } else if (pick < 0.7) {
          const record = completed[Math.floor(random() * completed.length)] as (typeof completed)[number];
          const reply = await post(record.key, record.body);
          outcomes.push("replay");
          expectThat(
            reply.status === 201 &&
              reply.headers["idempotent-replayed"] === "true" &&
              reply.body.equals(record.reply),
            "replay",
            reply,
          );
        } else if (pick < 0.85) {
          const key = `${prefix}-${newKeys++}`;
          const pair = await Promise.all([post(key, bodyOf(key), 20), post(key, bodyOf(key), 20)]);
          const originals = pair.filter((r) => r.status === 201 && !r.headers["idempotent-replayed"]);
          const others = pair.filter((r) => r !== originals[0]);
          outcomes.push(`duplicates:${others.map((r) => (r.status === 409 ? "409" : "replay")).join("")}`);
          expectThat(originals.length === 1, "one original among duplicates", pair[0] as Reply);
          for (const other of others) {
            const fine =
              (other.status === 409 && problemType(other) === "urn:idempotency:problem:in-progress") ||
              (other.headers["idempotent-replayed"] === "true" &&
                other.body.equals((originals[0] as Reply).body));
            expectThat(fine, "duplicate", other);
          }
          if (originals[0]) completed.push({ key, body: bodyOf(key), reply: originals[0].body });
        } else {
          const record = completed[Math.floor(random() * completed.length)] as (typeof completed)[number];
          const reply = await post(record.key, JSON.stringify({ key: record.key, amount: 999 }));
          outcomes.push("422");
          expectThat(reply.status === 422, "key reused", reply);
        }
      }

      async function load(seconds: number): Promise<void> {
        const until = performance.now() + seconds * 1000;
        await Promise.all(
          Array.from({ length: LOOPS }, async () => {
            while (performance.now() < until) await operation();
          }),
        );
      }

      await load(WARM_UP_SECONDS);
      const start = await server.stats();
      const startedAt = performance.now();
      const samples: Array<{ at: number; stats: ServerStats }> = [];
      let loading = true;
      const sampling = (async () => {
        while (loading) {
          samples.push({ at: performance.now(), stats: await server.stats() });
          await sleep(1_000); // a sampling period, not a synchronisation
        }
      })();
      await load(SOAK_SECONDS - WARM_UP_SECONDS);
      loading = false;
      await sampling;
      const end = await server.stats();
      const mainMs = performance.now() - startedAt;
      agent.destroy();

      // Every key ran exactly once, counted in the ledger.
      const executions = fixture.ledger.all().filter((row) => row.key.startsWith(`${prefix}-`));
      const perKey = fixture.ledger.counts();
      const third = Math.max(1, Math.floor(samples.length / 3));
      const rssFirst = median(samples.slice(0, third).map((s) => s.stats.memory.rss));
      const rssLast = median(samples.slice(-third).map((s) => s.stats.memory.rss));
      const rssMiddle = median(samples.slice(third, -third).map((s) => s.stats.memory.rss));
      const externalFirst = median(samples.slice(0, third).map((s) => s.stats.memory.external));
      const externalLast = median(samples.slice(-third).map((s) => s.stats.memory.external));
      const heapFirst = median(samples.slice(0, third).map((s) => s.stats.memory.heapUsed));
      const heapLast = median(samples.slice(-third).map((s) => s.stats.memory.heapUsed));
      const main = latencies.filter((l) => l.at >= startedAt);
      const fifth = Math.max(1, Math.floor(main.length / 5));
      const p50First = median(main.slice(0, fifth).map((l) => l.ms));
      const p50Last = median(main.slice(-fifth).map((l) => l.ms));
      const sum = (counts: Record<string, number>) => Object.values(counts).reduce((n, c) => n + c, 0);
      const resources = (stats: ServerStats) =>
        Object.entries(stats.resources)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([type, n]) => `${type}×${n}`)
          .join(" ");
      report(
        `soak/${storeKind}/${binding}`,
        `seed ${SEED}; SOAK_SECONDS ${SOAK_SECONDS} (warm-up ${WARM_UP_SECONDS} s, then ${(mainMs / 1000).toFixed(1)} s measured), ` +
          `${LOOPS} loops on ${LOOPS} keep-alive connections: ${requests} requests, ${tally(outcomes)}; ` +
          `${executions.length} executions over ${newKeys} new keys; ${failures.length} unexpected answers; ` +
          `heap after GC ${mb(start.memory.heapUsed)} → ${mb(end.memory.heapUsed)} MB (median of first/last third of ` +
          `${samples.length} samples ${mb(heapFirst)}/${mb(heapLast)} MB); RSS ${mb(start.memory.rss)} → ${mb(end.memory.rss)} MB ` +
          `(medians of the thirds ${mb(rssFirst)}/${mb(rssMiddle)}/${mb(rssLast)} MB; external ${mb(externalFirst)}/${mb(externalLast)} MB); resources ${resources(start)} → ${resources(end)}; listeners ` +
          `process ${start.listeners.process} → ${end.listeners.process}, server ${start.listeners.server} → ` +
          `${end.listeners.server}; latency p50 first/last fifth ${p50First.toFixed(2)}/${p50Last.toFixed(2)} ms`,
        { requests, executions: executions.length, records: newKeys, fiveXx: 0 },
      );

      expect(failures).toEqual([]);
      expect(executions).toHaveLength(newKeys);
      for (let i = 0; i < newKeys; i++) expect(perKey.get(`${prefix}-${i}`)).toBe(1);
      // Flat: growth within generous margins (a leak of a few hundred bytes per request would exceed them).
      expect(end.memory.heapUsed).toBeLessThanOrEqual(start.memory.heapUsed * 1.25 + 5 * MB);
      expect(heapLast).toBeLessThanOrEqual(heapFirst * 1.25 + 5 * MB);
      expect(rssLast).toBeLessThanOrEqual(rssFirst * 1.25 + 30 * MB);
      for (const [type, count] of Object.entries(end.resources)) {
        expect(count, type).toBeLessThanOrEqual((start.resources[type] ?? 0) + 2);
      }
      expect(sum(end.resources)).toBeLessThanOrEqual(sum(start.resources) + 4);
      expect(end.listeners).toEqual(start.listeners);
      expect(p50Last).toBeLessThanOrEqual(2 * p50First + 5);
      expect(server.stderr).toBe("");
    },
    (SOAK_SECONDS + 60) * 1000,
  );
});
