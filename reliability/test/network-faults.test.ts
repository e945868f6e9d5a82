/**
 * Network faults between the application and Redis: a TCP proxy in the test (loopback only) adds latency,
 * drops connections mid-command, or black-holes traffic. Fail-closed: every request during a fault gets 503
 * problem+json with Retry-After within the store timeout, and its handler never runs; no request hangs; a
 * command that timed out is never applied later (a retry after the fault runs at once, no 409 from an orphan
 * claim); the store recovers by itself when the proxy heals.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { FaultyProxy } from "./support/proxy.js";
import { SEED } from "./support/random.js";
import { startSingle } from "./support/redis.js";
import { report, tally } from "./support/report.js";
import { problemType, type Reply, ServerProcess, send, sleep } from "./support/servers.js";

const LEASE_MS = 1_500;
const STORE_TIMEOUT_MS = 300;
const PER_PHASE = 20;
/** A 503 must come once the store call has timed out, plus the time to answer on a busy 2-core machine. */
const ANSWER_BOUND_MS = STORE_TIMEOUT_MS + 700;
/** The client's own hard stop: a request still unanswered after this has hung. */
const HANG_MS = 5_000;

describe("network faults between the application and Redis (fail-closed)", () => {
  let dir: string;
  let ledger: Ledger;
  let redis: Awaited<ReturnType<typeof startSingle>>;
  let proxy: FaultyProxy;
  let server: ServerProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "idempotency-network-"));
    ledger = new Ledger(join(dir, "ledger.db"));
    redis = await startSingle({ honourRedisUrl: false });
    proxy = await FaultyProxy.start(redis.server?.port as number);
    server = await ServerProcess.start({
      binding: "express",
      store: "redis",
      redisUrl: proxy.url,
      ledgerPath: ledger.path,
      leaseMs: LEASE_MS,
      storeTimeoutMs: STORE_TIMEOUT_MS,
    });
  });

  afterAll(async () => {
    await server?.stop();
    await proxy?.close();
    await redis?.stop();
    ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** PER_PHASE concurrent requests on fresh keys; a request unanswered after HANG_MS counts as hung. */
  async function burst(phase: string): Promise<{ keys: string[]; replies: Array<Reply | "hung"> }> {
    const keys = Array.from({ length: PER_PHASE }, (_, i) => `${phase}-${SEED}-${i}`);
    const replies = await Promise.all(
      keys.map((key) => send({ port: server.port, key, timeoutMs: HANG_MS }).catch(() => "hung" as const)),
    );
    return { keys, replies };
  }

  /** Retries until every key got its 201; the replies of each key, and when its 201 came. */
  async function untilHealed(keys: string[], boundMs: number) {
    const started = performance.now();
    return Promise.all(
      keys.map(async (key) => {
        const seen: Reply[] = [];
        for (;;) {
          const reply = await send({ port: server.port, key, timeoutMs: HANG_MS });
          seen.push(reply);
          if (reply.status === 201 || performance.now() - started > boundMs) break;
          await sleep(50);
        }
        return { key, seen, healedMs: performance.now() - started };
      }),
    );
  }

  /** Executions of `keys` so far, read before the retries that follow a heal. */
  const executionsOf = (keys: string[]) => keys.map((key) => ledger.of(key).length);

  function expectFailClosed(
    keys: string[],
    replies: Array<Reply | "hung">,
    executionsBeforeHeal: number[],
  ): void {
    for (const reply of replies) {
      expect(reply).not.toBe("hung");
      const answered = reply as Reply;
      expect(answered.status, answered.body.toString("utf8")).toBe(503);
      expect(problemType(answered)).toBe("urn:idempotency:problem:store-unavailable");
      expect(answered.headers["retry-after"]).toBe("1");
      expect(answered.ms).toBeLessThan(ANSWER_BOUND_MS);
    }
    // Fail-closed: no handler ran for them.
    expect(executionsBeforeHeal).toEqual(keys.map(() => 0));
  }

  const statusesOf = (replies: Array<Reply | "hung">) =>
    tally(replies.map((reply) => (reply === "hung" ? "hung" : reply.status)));
  const slowest = (replies: Array<Reply | "hung">) =>
    Math.max(...replies.map((reply) => (reply === "hung" ? HANG_MS : reply.ms))).toFixed(0);

  it("latency below the store timeout: every request runs; above it: 503 within the timeout, and the late commands are refused", async () => {
    await burst("warm-up"); // the store has learned the server clock, the connection is up
    proxy.latency(25); // 50 ms round trip
    const slow = await burst("latency-25");
    proxy.latency(400); // 800 ms round trip, past the 300 ms store timeout
    const late = await burst("latency-400");
    const lateExecutions = executionsOf(late.keys);
    proxy.heal();
    const retried = await untilHealed(late.keys, 5_000);
    const retries = retried.flatMap(({ seen }) => seen);
    report(
      "network/latency",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}; +25 ms each way: ${statusesOf(slow.replies)} (slowest ` +
        `${slowest(slow.replies)} ms); +400 ms each way: ${statusesOf(late.replies)} (slowest ` +
        `${slowest(late.replies)} ms); healed, retries of those keys: ${tally(retries.map((r) => r.status))}`,
      {
        requests: PER_PHASE * 3 + retries.length,
        faults: 2,
        executions: PER_PHASE * 2,
        records: PER_PHASE * 2,
        fiveXx: late.replies.length,
      },
    );

    for (const reply of slow.replies) expect((reply as Reply).status).toBe(201);
    expectFailClosed(late.keys, late.replies, lateExecutions);
    // The timed-out begins reached Redis 400 ms late and were refused there: each retry runs at once.
    for (const { key, seen } of retried) {
      expect(seen.map((reply) => reply.status)).toEqual([201]);
      expect(ledger.of(key)).toHaveLength(1);
    }
  });

  it("a black hole: 503 within the timeout, nothing hangs, nothing applied when the held bytes arrive; recovery on heal", async () => {
    proxy.blackHole();
    const holed = await burst("black-hole");
    const holedExecutions = executionsOf(holed.keys);
    const heldAt = performance.now();
    await sleep(700); // the held commands are now 1 s old, well past their 300 ms deadline
    proxy.heal();
    const retried = await untilHealed(holed.keys, 5_000);
    const recoveredMs = Math.max(...retried.map(({ healedMs }) => healedMs));
    const retries = retried.flatMap(({ seen }) => seen);
    report(
      "network/black-hole",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}; black-holed: ${statusesOf(holed.replies)} (slowest ` +
        `${slowest(holed.replies)} ms); healed after ${(performance.now() - heldAt).toFixed(0)} ms, retries: ` +
        `${tally(retries.map((r) => r.status))}, all served within ${recoveredMs.toFixed(0)} ms`,
      {
        requests: PER_PHASE + retries.length,
        faults: 1,
        executions: PER_PHASE,
        records: PER_PHASE,
        fiveXx: holed.replies.length + retries.filter((r) => r.status >= 500).length,
      },
    );

    expectFailClosed(holed.keys, holed.replies, holedExecutions);
    for (const { key, seen } of retried) {
      // The held commands arrived after their deadline: no orphan claim, so never a 409.
      expect(seen.filter((reply) => reply.status === 409)).toEqual([]);
      expect(seen[seen.length - 1]?.status).toBe(201);
      expect(ledger.of(key)).toHaveLength(1);
    }
  });

  it("connections dropped mid-command: 503 at once, no hang; after heal every key runs exactly once, within the lease at most", async () => {
    const acceptedBefore = proxy.accepted;
    proxy.drop();
    const dropped = await burst("drop");
    const droppedConnections = proxy.dropped;
    const droppedExecutions = executionsOf(dropped.keys);
    proxy.heal();
    const retried = await untilHealed(dropped.keys, LEASE_MS + 3_000);
    const recoveredMs = Math.max(...retried.map(({ healedMs }) => healedMs));
    const retries = retried.flatMap(({ seen }) => seen);
    report(
      "network/drop",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}, leaseMs ${LEASE_MS}; ${droppedConnections} connections dropped ` +
        `mid-command (${proxy.accepted - acceptedBefore} reconnects): ${statusesOf(dropped.replies)} (slowest ` +
        `${slowest(dropped.replies)} ms); healed, retries: ${tally(retries.map((r) => problemType(r) ?? r.status))}, ` +
        `all served within ${recoveredMs.toFixed(0)} ms; ledger ${tally(dropped.keys.map((key) => ledger.of(key).length))} per key`,
      {
        requests: PER_PHASE + retries.length,
        faults: droppedConnections,
        executions: PER_PHASE,
        records: PER_PHASE,
        fiveXx: dropped.replies.length + retries.filter((r) => r.status >= 500).length,
      },
    );

    expect(droppedConnections).toBeGreaterThan(0);
    expectFailClosed(dropped.keys, dropped.replies, droppedExecutions);
    for (const { key, seen } of retried) {
      // A begin whose reply was lost may have claimed the key: then 409 until its lease ends, never longer.
      // Right after the heal the client may still be reconnecting (slower on a loaded machine): 503 then.
      for (const reply of seen.slice(0, -1))
        expect([
          "urn:idempotency:problem:in-progress",
          "urn:idempotency:problem:store-unavailable",
        ]).toContain(problemType(reply));
      expect(seen[seen.length - 1]?.status).toBe(201);
      expect(ledger.of(key)).toHaveLength(1);
    }
    expect(recoveredMs).toBeLessThan(LEASE_MS + 1_000);
    expect(server.stderr).toBe("");
  });
});
