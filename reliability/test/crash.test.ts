/**
 * Crash: a server process is SIGKILLed while its handlers hold claims. Before the lease ends, another process
 * answers 409 for those keys; after it, `onLeaseExpired: "run-again"` (the default) takes each key over and
 * runs it exactly once more, and `"conflict"` never runs it again until the record's TTL ends. The key is
 * never wedged: the takeover comes within the lease, not the TTL.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { SEED } from "./support/random.js";
import { startSingle } from "./support/redis.js";
import { report, tally } from "./support/report.js";
import { problemType, type Reply, type ServerConfig, ServerProcess, send, sleep } from "./support/servers.js";

const LEASE_MS = 1_000;
const TTL_MS = 5_000; // for "conflict": the in-flight record, and its lock, end with the TTL
const HELD = 10;

describe.each(["sqlite", "redis"] as const)(
  "a server process killed while it holds claims (%s)",
  (storeKind) => {
    let dir: string;
    let ledger: Ledger;
    let redis: Awaited<ReturnType<typeof startSingle>> | undefined;
    const servers: ServerProcess[] = [];

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), `idempotency-crash-${storeKind}-`));
      ledger = new Ledger(join(dir, "ledger.db"));
      if (storeKind === "redis") redis = await startSingle({ honourRedisUrl: false });
    });

    afterAll(async () => {
      await Promise.all(servers.map((server) => server.stop()));
      await redis?.stop();
      ledger?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    async function start(policy: "run-again" | "conflict", name: string): Promise<ServerProcess> {
      const config: ServerConfig = {
        binding: "express",
        store: storeKind,
        sqlitePath: join(dir, "store.db"),
        redisUrl: redis?.url,
        ledgerPath: ledger.path,
        leaseMs: LEASE_MS,
        onLeaseExpired: policy,
        ...(policy === "conflict" ? { ttlMs: TTL_MS } : {}),
      };
      const server = await ServerProcess.start(config, name);
      servers.push(server);
      return server;
    }

    /** Sends HELD long requests to `victim`, waits until every handler has started, then SIGKILLs it. */
    async function crashWhileHolding(victim: ServerProcess, keys: string[]): Promise<number> {
      const doomed = keys.map((key) => send({ port: victim.port, key, handlerMs: 60_000 }).catch(() => null));
      const deadline = performance.now() + 10_000;
      while (keys.some((key) => ledger.of(key).length === 0)) {
        if (performance.now() > deadline)
          throw new Error(`the handlers did not all start:\n${victim.stderr}`);
        await sleep(10);
      }
      await victim.kill();
      const killedAt = performance.now();
      expect(await Promise.all(doomed)).toEqual(keys.map(() => null)); // their clients saw the connection die
      return killedAt;
    }

    /** Retries `key` on `port` every 50 ms until `until` says stop; every reply with its time since `t0`. */
    async function retryUntil(
      port: number,
      key: string,
      t0: number,
      until: (reply: Reply, sinceMs: number) => boolean,
    ): Promise<Array<{ reply: Reply; atMs: number }>> {
      const seen: Array<{ reply: Reply; atMs: number }> = [];
      for (;;) {
        const reply = await send({ port, key });
        const atMs = performance.now() - t0;
        seen.push({ reply, atMs });
        if (until(reply, atMs)) return seen;
        await sleep(50);
      }
    }

    it('"run-again": 409 from another process before the lease ends, then one takeover per key within the lease, then the takeover\'s replay', async () => {
      const victim = await start("run-again", "express#victim");
      const heir = await start("run-again", "express#heir");
      const witness = await start("run-again", "express#witness");
      const keys = Array.from({ length: HELD }, (_, i) => `${storeKind}-crash-again-${SEED}-${i}`);

      const killedAt = await crashWhileHolding(victim, keys);
      const probes = await Promise.all(keys.map((key) => send({ port: heir.port, key })));
      const probesDoneMs = performance.now() - killedAt;
      const histories = await Promise.all(
        keys.map((key) => retryUntil(heir.port, key, killedAt, (reply) => reply.status !== 409)),
      );
      const replays = await Promise.all(keys.map((key) => send({ port: witness.port, key })));

      const takeoverMs = histories.map((history) => (history[history.length - 1] as { atMs: number }).atMs);
      const retries = histories.flat();
      report(
        `crash/${storeKind}/run-again`,
        `leaseMs ${LEASE_MS}; SIGKILLed pid ${victim.child.pid} holding ${HELD} claims; ${HELD} probes on another ` +
          `process within ${probesDoneMs.toFixed(0)} ms: ${tally(probes.map((r) => r.status))}; ` +
          `${retries.length} retries every 50 ms: ${tally(retries.map(({ reply }) => reply.status))}; takeover ` +
          `${Math.min(...takeoverMs).toFixed(0)}–${Math.max(...takeoverMs).toFixed(0)} ms after the kill; ` +
          `replays from a third process: ${tally(replays.map((r) => `${r.status}${r.headers["idempotent-replayed"] ? "r" : ""}`))}; ` +
          `ledger ${tally(keys.map((key) => ledger.of(key).length))} executions per key`,
        {
          requests: HELD * 2 + retries.length + probes.length,
          faults: 1,
          executions: keys.reduce((n, key) => n + ledger.of(key).length, 0),
          records: HELD,
          fiveXx: [...probes, ...replays, ...retries.map(({ reply }) => reply)].filter((r) => r.status >= 500)
            .length,
        },
      );

      // Before the lease can have ended (at least 2/3 of it is left after the last renewal): 409 in progress.
      expect(probesDoneMs).toBeLessThan((LEASE_MS * 2) / 3);
      for (const probe of probes) {
        expect(probe.status).toBe(409);
        expect(problemType(probe)).toBe("urn:idempotency:problem:in-progress");
        expect(Number(probe.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      }
      for (const [i, key] of keys.entries()) {
        const history = histories[i] as Array<{ reply: Reply; atMs: number }>;
        const last = history[history.length - 1] as { reply: Reply; atMs: number };
        // Every retry until the takeover was a 409 in progress; the takeover is a fresh execution, not a replay.
        for (const { reply } of history.slice(0, -1))
          expect(problemType(reply)).toBe("urn:idempotency:problem:in-progress");
        expect(last.reply.status).toBe(201);
        expect(last.reply.headers["idempotent-replayed"]).toBeUndefined();
        // Never wedged: taken over once the lease ran out, not after the TTL (24 h by default).
        expect(last.atMs).toBeLessThan(LEASE_MS + 1_000);
        // Exactly as the design says: the killed execution and one takeover, by the heir.
        const rows = ledger.of(key);
        expect(rows.map((row) => row.pid)).toEqual([victim.child.pid, heir.child.pid]);
        expect(last.reply.body.toString("utf8")).toBe(rows[1]?.body);
        // Every later retry, from any process, replays the takeover's response byte for byte.
        const replay = replays[i] as Reply;
        expect(replay.status).toBe(201);
        expect(replay.headers["idempotent-replayed"]).toBe("true");
        expect(replay.body.equals(last.reply.body)).toBe(true);
      }
    });

    it('"conflict": 409 in-progress, then 409 key-locked after the lease, never a second execution before the TTL; the key is free once the TTL ends', async () => {
      const victim = await start("conflict", "express#victim");
      const heir = await start("conflict", "express#heir");
      const keys = Array.from({ length: HELD }, (_, i) => `${storeKind}-crash-conflict-${SEED}-${i}`);

      const claimedAt = performance.now();
      const killedAt = await crashWhileHolding(victim, keys);
      const probes = await Promise.all(keys.map((key) => send({ port: heir.port, key })));
      const probesDoneMs = performance.now() - killedAt;
      // Retry for 3 leases: in progress until the lease ends, key-locked after it.
      const histories = await Promise.all(
        keys.map((key) => retryUntil(heir.port, key, killedAt, (_, sinceMs) => sinceMs > 3 * LEASE_MS)),
      );
      const executionsWithinTtl = keys.map((key) => ledger.of(key).length);
      // The record (and its lock) ends with its TTL, counted from the claim: then the key runs again.
      await sleep(Math.max(0, claimedAt + TTL_MS + 300 - performance.now()));
      const afterTtl = await Promise.all(keys.map((key) => send({ port: heir.port, key })));

      const retries = histories.flat();
      report(
        `crash/${storeKind}/conflict`,
        `leaseMs ${LEASE_MS}, ttlMs ${TTL_MS}; SIGKILLed pid ${victim.child.pid} holding ${HELD} claims; probes ` +
          `within ${probesDoneMs.toFixed(0)} ms: ${tally(probes.map((r) => problemType(r) ?? r.status))}; ` +
          `${retries.length} retries over ${3 * LEASE_MS} ms: ${tally(retries.map(({ reply }) => problemType(reply) ?? reply.status))}; ` +
          `executions per key before the TTL ${tally(executionsWithinTtl)}; after the TTL: ` +
          `${tally(afterTtl.map((r) => r.status))}, ledger ${tally(keys.map((key) => ledger.of(key).length))} per key`,
        {
          requests: HELD * 2 + probes.length + retries.length + afterTtl.length,
          faults: 1,
          executions: keys.reduce((n, key) => n + ledger.of(key).length, 0),
          records: HELD,
          fiveXx: [...probes, ...afterTtl, ...retries.map(({ reply }) => reply)].filter(
            (r) => r.status >= 500,
          ).length,
        },
      );

      expect(probesDoneMs).toBeLessThan((LEASE_MS * 2) / 3);
      for (const probe of probes) expect(problemType(probe)).toBe("urn:idempotency:problem:in-progress");
      for (const history of histories) {
        for (const { reply, atMs } of history) {
          expect(reply.status).toBe(409);
          // In progress while the lease may still run (it ends at most LEASE_MS after the kill), locked after.
          if (atMs > LEASE_MS + 200) {
            expect(problemType(reply)).toBe("urn:idempotency:problem:key-locked");
            expect(reply.headers["retry-after"]).toBeUndefined();
          }
        }
        const types = history.map(({ reply }) => problemType(reply));
        // The order is in-progress…, then key-locked… and never back.
        expect(types).toEqual([...types].sort());
      }
      expect(executionsWithinTtl).toEqual(keys.map(() => 1));
      for (const [i, key] of keys.entries()) {
        expect((afterTtl[i] as Reply).status).toBe(201);
        expect((afterTtl[i] as Reply).headers["idempotent-replayed"]).toBeUndefined();
        expect(ledger.of(key).map((row) => row.pid)).toEqual([victim.child.pid, heir.child.pid]);
      }
    });
  },
);
