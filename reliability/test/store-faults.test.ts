/**
 * The store itself fails, under several server processes: Redis killed and restarted on its port mid-load,
 * Redis paused (CLIENT PAUSE) past the store timeout, a SQLite file write-locked by another process past the
 * busy timeout, and a store that stops answering exactly when a handler has succeeded and its response must
 * be completed. Fail-closed: 503 problem+json within the timeout, never a hang or a 500, no handler run
 * unprotected, no late command applied unnoticed; recovery by itself; and for a failed completion, the
 * bounded retry and the documented outcome (docs/guarantees.md, "Store errors and timeouts").
 */
import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  FaultServer,
  type FaultServerConfig,
  identityOf,
  post,
  type ReportedEvent,
} from "./support/fault-servers.js";
import { Ledger } from "./support/ledger.js";
import { SEED } from "./support/random.js";
import { RedisServer, startSingle, tempDir } from "./support/redis.js";
import { report, tally } from "./support/report.js";
import { problemType, type Reply, sleep } from "./support/servers.js";

const STORE_TIMEOUT_MS = 300;
const LEASE_MS = 3_000;
/** A 503 must come once the store call has timed out, plus the time to answer on a busy 2-core machine. */
const ANSWER_BOUND_MS = STORE_TIMEOUT_MS + 700;
/** The client's own hard stop: a request still unanswered after this has hung. */
const HANG_MS = 8_000;
const STORE_UNAVAILABLE = "urn:idempotency:problem:store-unavailable";

let dir: string;
let ledger: Ledger;
const servers: FaultServer[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "idempotency-store-faults-"));
  ledger = new Ledger(join(dir, "ledger.db"));
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.stop()));
});
afterAll(() => {
  ledger?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startServers(count: number, config: Omit<FaultServerConfig, "ledgerPath">, name: string) {
  const started = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      FaultServer.start({ ledgerPath: ledger.path, ...config }, `${name}#${i}`),
    ),
  );
  servers.push(...started);
  // Warm up: a RedisStore learns the server clock and loads its scripts, a SqliteStore opens its file.
  for (const server of started)
    expect((await post({ port: server.port, key: `warm-up-${server.name}-${SEED}` })).status).toBe(201);
  return started;
}

function expectStoreUnavailable(reply: Reply, boundMs: number): void {
  expect(reply.status, reply.body.toString("utf8")).toBe(503);
  expect(problemType(reply)).toBe(STORE_UNAVAILABLE);
  expect(reply.headers["retry-after"]).toBe("1");
  expect(reply.ms).toBeLessThan(boundMs);
}

const typesOf = (events: ReportedEvent[]) =>
  events.map((event) => (event.operation ? `${event.type}(${event.operation})` : event.type));

describe("Redis killed (SIGKILL) and restarted on its port mid-load, 3 server processes", () => {
  let redisDir: ReturnType<typeof tempDir>;
  let redis: RedisServer;

  beforeAll(async () => {
    redisDir = tempDir();
    redis = await RedisServer.start(redisDir.path);
  });
  afterAll(async () => {
    await redis?.kill();
    redisDir?.remove();
  });

  it("fail-closed: 503 problem+json within the store timeout while it is down, no hang, no unprotected run; recovers by itself after the restart", async () => {
    const group = await startServers(
      3,
      { store: "redis", redisUrl: redis.url, leaseMs: LEASE_MS, storeTimeoutMs: STORE_TIMEOUT_MS },
      "redis-restart",
    );
    const pids = group.map((server) => server.pid);
    const LOOPS = 6;
    const replies: Array<{ key: string; reply: Reply; sentAt: number; server: number }> = [];
    const failures: string[] = [];
    const t0 = performance.now();
    let stop = false;
    // Each loop sends fresh keys one after another, to the 3 servers in turn; a 503 is retried with the same
    // key 50 ms later, as a client would, until it gets its 201.
    const loops = Array.from({ length: LOOPS }, async (_, loop) => {
      let attempt = 0;
      for (let i = 0; !stop; i++) {
        const key = `restart-${SEED}-${loop}-${i}`;
        for (;;) {
          const server = attempt++ % group.length;
          const sentAt = performance.now() - t0;
          try {
            const reply = await post({
              port: (group[server] as FaultServer).port,
              key,
              handlerMs: 20,
              timeoutMs: HANG_MS,
            });
            replies.push({ key, reply, sentAt, server });
            if (reply.status !== 503) break;
          } catch (error) {
            failures.push(`${key}: ${String(error)}`);
            break;
          }
          await sleep(50);
        }
      }
    });

    await sleep(1_000);
    const killedAt = performance.now() - t0;
    const killedAtEpoch = Date.now();
    await redis.kill();
    await sleep(1_500);
    const restartingAtEpoch = Date.now();
    redis = await RedisServer.start(redisDir.path, { port: redis.port });
    const restartedAt = performance.now() - t0;
    await sleep(2_000);
    stop = true;
    await Promise.all(loops);

    const outageReplies = replies.filter(({ reply }) => reply.status === 503);
    const after = replies.filter(({ sentAt }) => sentAt > restartedAt);
    const firstOkAfter = group.map((_, i) => {
      const ok = after.find(({ server, reply }) => server === i && reply.status === 201);
      return ok ? ok.sentAt + ok.reply.ms - restartedAt : Number.POSITIVE_INFINITY;
    });
    const keys = [...new Set(replies.map(({ key }) => key))];
    const executions = ledger.all().filter((row) => row.key.startsWith(`restart-${SEED}-`));
    const allEvents = group.flatMap((server) => server.events);
    report(
      "store-faults/redis-restart",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}; ${LOOPS} client loops on 3 processes; Redis SIGKILLed at ` +
        `${killedAt.toFixed(0)} ms, restarted on port ${redis.port} at ${restartedAt.toFixed(0)} ms; ` +
        `${replies.length} replies: ${tally(replies.map(({ reply }) => reply.status))} (slowest 503 ` +
        `${Math.max(0, ...outageReplies.map(({ reply }) => reply.ms)).toFixed(0)} ms), ${failures.length} hung ` +
        `or failed; first 201 per process ${firstOkAfter.map((ms) => ms.toFixed(0)).join("/")} ms after the ` +
        `restart; ${keys.length} keys, ${executions.length} executions; events ` +
        `${tally(typesOf(allEvents))}`,
      {
        requests: replies.length + failures.length,
        faults: 2,
        executions: executions.length,
        records: keys.length,
        fiveXx: outageReplies.length,
      },
    );

    expect(failures).toEqual([]);
    expect(outageReplies.length).toBeGreaterThan(0);
    for (const { reply, sentAt } of replies) {
      if (reply.status === 503) {
        expectStoreUnavailable(reply, ANSWER_BOUND_MS);
        // Only while Redis was down (or reconnecting just after the restart).
        expect(sentAt + reply.ms).toBeGreaterThan(killedAt);
        expect(sentAt).toBeLessThan(restartedAt + 1_000);
      } else expect(reply.status).toBe(201);
    }
    // Exactly one execution per key, and it is the 201 its client got: no 503'd attempt ran its handler.
    const originals = replies.filter(({ reply }) => reply.status === 201);
    expect(originals.map(({ key }) => key).sort()).toEqual([...keys].sort());
    expect(executions.map((row) => row.key).sort()).toEqual([...keys].sort());
    const bodyOf = new Map(executions.map((row) => [row.key, row.body]));
    for (const { key, reply } of originals) expect(reply.body.toString("utf8")).toBe(bodyOf.get(key));
    // No handler started while Redis was down (a claim answered just before the kill starts within ms).
    const unprotected = executions.filter(
      (row) => row.at > killedAtEpoch + 100 && row.at < restartingAtEpoch,
    );
    expect(unprotected).toEqual([]);
    expect(allEvents.filter((event) => event.type === "fail-open")).toEqual([]);
    // Recovered by itself: the same processes serve 201s again soon after the restart.
    for (const ms of firstOkAfter) expect(ms).toBeLessThan(3_000);
    expect(group.map((server) => server.alive)).toEqual([true, true, true]);
    expect(
      new Set(
        originals
          .filter(({ sentAt }) => sentAt > restartedAt)
          .map(({ reply }) => JSON.parse(reply.body.toString()).pid),
      ),
    ).toEqual(new Set(pids));
    for (const server of group) expect(server.stderr, server.name).toBe("");
  });
});

describe("Redis paused (CLIENT PAUSE) for longer than the store timeout, 3 server processes", () => {
  let redis: Awaited<ReturnType<typeof startSingle>>;
  let control: Redis;

  beforeAll(async () => {
    redis = await startSingle({ honourRedisUrl: false });
    control = redis.client();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it("503 within the timeout; the timed-out begins leave no claim behind, so each retry after the pause runs exactly once", async () => {
    const group = await startServers(
      3,
      { store: "redis", redisUrl: redis.url, leaseMs: LEASE_MS, storeTimeoutMs: STORE_TIMEOUT_MS },
      "redis-pause",
    );
    const PAUSE_MS = 1_500;
    const keys = Array.from({ length: 24 }, (_, i) => `pause-${SEED}-${i}`);
    await control.call("CLIENT", "PAUSE", String(PAUSE_MS), "ALL");
    const pausedAt = performance.now();
    const paused = await Promise.all(
      keys.map((key, i) =>
        post({ port: (group[i % 3] as FaultServer).port, key, timeoutMs: HANG_MS }).catch(() => null),
      ),
    );
    const executionsDuringPause = keys.map((key) => ledger.of(key).length);
    await sleep(Math.max(0, pausedAt + PAUSE_MS + 300 - performance.now()));
    // The begins Redis ran once the pause ended were past their deadline: refused, so no record exists.
    const leftBehind = await Promise.all(keys.map((key) => control.exists(`idempotency:${identityOf(key)}`)));
    const retries = await Promise.all(
      keys.map((key, i) => post({ port: (group[(i + 1) % 3] as FaultServer).port, key, timeoutMs: HANG_MS })),
    );
    const replays = await Promise.all(
      keys.map((key, i) => post({ port: (group[(i + 2) % 3] as FaultServer).port, key, timeoutMs: HANG_MS })),
    );
    const answered = paused.filter((reply): reply is Reply => reply !== null);
    report(
      "store-faults/redis-client-pause",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}; CLIENT PAUSE ${PAUSE_MS} ALL; ${keys.length} requests on 3 processes ` +
        `during the pause: ${tally(paused.map((r) => (r === null ? "hung" : r.status)))} (slowest ` +
        `${Math.max(...answered.map((r) => r.ms)).toFixed(0)} ms), executions ${tally(executionsDuringPause)}; ` +
        `records left by the refused begins after the pause: ${leftBehind.reduce((n, x) => n + x, 0)}; retries ` +
        `on another process: ${tally(retries.map((r) => r.status))}; replays: ` +
        `${tally(replays.map((r) => `${r.status}${r.headers["idempotent-replayed"] ? "r" : ""}`))}; ledger ` +
        `${tally(keys.map((key) => ledger.of(key).length))} per key`,
      {
        requests: keys.length * 3,
        faults: 1,
        executions: keys.length,
        records: keys.length,
        fiveXx: answered.filter((r) => r.status >= 500).length,
      },
    );

    expect(answered).toHaveLength(keys.length);
    for (const reply of answered) expectStoreUnavailable(reply, ANSWER_BOUND_MS);
    expect(executionsDuringPause).toEqual(keys.map(() => 0));
    expect(leftBehind).toEqual(keys.map(() => 0));
    for (const [i, key] of keys.entries()) {
      const retry = retries[i] as Reply;
      expect(retry.status).toBe(201); // not 409: no orphan claim
      expect(retry.headers["idempotent-replayed"]).toBeUndefined();
      expect(ledger.of(key).map((row) => row.body)).toEqual([retry.body.toString("utf8")]);
      const replay = replays[i] as Reply;
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.body.equals(retry.body)).toBe(true);
    }
    for (const server of group) expect(server.stderr, server.name).toBe("");
  });
});

describe.each(["IMMEDIATE", "EXCLUSIVE"] as const)(
  "a SQLite store file write-locked by another process (BEGIN %s) past the busy timeout, 3 server processes",
  (mode) => {
    const LOCKER = fileURLToPath(new URL("./support/sqlite-locker.mjs", import.meta.url));
    const BUSY_TIMEOUT_MS = 400;
    const PER_PROCESS = 2;

    it("503 problem+json (not 500) within the busy timeout per queued call, no hang; recovers once the lock is released", async () => {
      const sqlitePath = join(dir, `store-${mode}.db`);
      const group = await startServers(
        3,
        { store: "sqlite", sqlitePath, busyTimeoutMs: BUSY_TIMEOUT_MS, leaseMs: LEASE_MS },
        `sqlite-${mode}`,
      );
      const locker: ChildProcess = fork(LOCKER, [sqlitePath, mode], {
        stdio: ["ignore", "ignore", "pipe", "ipc"],
      });
      const lockerExited = new Promise((resolve) => locker.once("exit", resolve));
      try {
        await new Promise<void>((resolve, reject) => {
          locker.once("message", () => resolve());
          locker.once("exit", (code) => reject(new Error(`the locker exited with ${code}`)));
        });
        const keys = Array.from({ length: 3 * PER_PROCESS }, (_, i) => `sqlite-${mode}-${SEED}-${i}`);
        const locked = await Promise.all(
          keys.map((key, i) =>
            post({ port: (group[i % 3] as FaultServer).port, key, timeoutMs: HANG_MS }).catch(() => null),
          ),
        );
        const executionsWhileLocked = keys.map((key) => ledger.of(key).length);
        locker.send({ type: "release" });
        await lockerExited;
        const retries = await Promise.all(
          keys.map((key, i) =>
            post({ port: (group[(i + 1) % 3] as FaultServer).port, key, timeoutMs: HANG_MS }),
          ),
        );
        const replays = await Promise.all(
          keys.map((key, i) =>
            post({ port: (group[(i + 2) % 3] as FaultServer).port, key, timeoutMs: HANG_MS }),
          ),
        );
        const answered = locked.filter((reply): reply is Reply => reply !== null);
        const storeErrors = group.flatMap((server) =>
          keys.flatMap((key) =>
            typesOf(server.eventsOf(key)).filter((type) => type.startsWith("store-error")),
          ),
        );
        report(
          `store-faults/sqlite-locked-${mode.toLowerCase()}`,
          `busyTimeoutMs ${BUSY_TIMEOUT_MS}; another process held BEGIN ${mode}; ${keys.length} requests ` +
            `(${PER_PROCESS} per process) meanwhile: ${tally(locked.map((r) => (r === null ? "hung" : r.status)))} ` +
            `in ${answered.map((r) => r.ms.toFixed(0)).join("/")} ms (${tally(storeErrors)}); executions ` +
            `${tally(executionsWhileLocked)}; lock released: retries ${tally(retries.map((r) => r.status))}, ` +
            `replays ${tally(replays.map((r) => `${r.status}${r.headers["idempotent-replayed"] ? "r" : ""}`))}; ` +
            `ledger ${tally(keys.map((key) => ledger.of(key).length))} per key`,
          {
            requests: keys.length * 3,
            faults: 1,
            executions: keys.length,
            records: keys.length,
            fiveXx: answered.length,
          },
        );

        expect(answered).toHaveLength(keys.length);
        // SQLite calls are synchronous: a process's second request waits behind its first one's busy wait.
        for (const reply of answered) expectStoreUnavailable(reply, PER_PROCESS * BUSY_TIMEOUT_MS + 1_000);
        expect(storeErrors).toEqual(keys.map(() => "store-error(begin)"));
        expect(executionsWhileLocked).toEqual(keys.map(() => 0));
        for (const [i, key] of keys.entries()) {
          const retry = retries[i] as Reply;
          expect(retry.status).toBe(201);
          expect(retry.headers["idempotent-replayed"]).toBeUndefined();
          expect(ledger.of(key).map((row) => row.body)).toEqual([retry.body.toString("utf8")]);
          expect((replays[i] as Reply).headers["idempotent-replayed"]).toBe("true");
          expect((replays[i] as Reply).body.equals(retry.body)).toBe(true);
        }
        for (const server of group) expect(server.stderr, server.name).toBe("");
      } finally {
        locker.kill("SIGKILL");
      }
    });
  },
);

describe("the store stops answering right after the handler succeeded (complete fails)", () => {
  let redis: Awaited<ReturnType<typeof startSingle>>;
  let control: Redis;

  beforeAll(async () => {
    redis = await startSingle({ honourRedisUrl: false });
    control = redis.client();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  const config = () =>
    ({ store: "redis", redisUrl: redis.url, leaseMs: LEASE_MS, storeTimeoutMs: STORE_TIMEOUT_MS }) as const;
  /** Holds `key`'s handler until it has started, pauses Redis writes for `pauseMs`, then lets it answer. */
  async function completeDuringPause(owner: FaultServer, key: string, pauseMs: number) {
    const pending = post({ port: owner.port, key, hold: true, timeoutMs: HANG_MS });
    await owner.until(() => owner.started.some((s) => s.key === key), "the handler started");
    await control.call("CLIENT", "PAUSE", String(pauseMs), "WRITE");
    const pausedAt = performance.now();
    owner.release(key);
    const reply = await pending;
    const afterReleaseMs = performance.now() - pausedAt;
    await owner.until(() => owner.eventsOf(key).length >= 2, "the owner reported how the completion ended");
    return { reply, afterReleaseMs, pausedAt };
  }

  it("healed within the bounded retry: a later attempt completes the record, the response is delivered once and replayed byte for byte", async () => {
    const [owner, witness] = (await startServers(2, config(), "complete-healed")) as [
      FaultServer,
      FaultServer,
    ];
    const key = `complete-healed-${SEED}`;
    const PAUSE_MS = 900;
    const { reply, afterReleaseMs } = await completeDuringPause(owner, key, PAUSE_MS);
    const replay = await post({ port: witness.port, key });
    const ownerEvents = typesOf(owner.eventsOf(key));
    report(
      "store-faults/complete-retried",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}; CLIENT PAUSE ${PAUSE_MS} WRITE as the handler answered: the client got ` +
        `${reply.status} ${afterReleaseMs.toFixed(0)} ms after the handler ended (first attempt timed out, a ` +
        `retry completed); owner events ${ownerEvents.join(" → ")}; replay from another process: ` +
        `${replay.status}${replay.headers["idempotent-replayed"] ? " replayed" : ""}; ledger ${ledger.of(key).length}`,
      { requests: 2, faults: 1, executions: 1, records: 1 },
    );

    expect(reply.status).toBe(201);
    expect(reply.body.toString("utf8")).toBe(ledger.of(key)[0]?.body);
    // The end of the response waited for the retry: at least one timed-out attempt and the first delay.
    expect(afterReleaseMs).toBeGreaterThanOrEqual(STORE_TIMEOUT_MS + 100);
    expect(afterReleaseMs).toBeLessThan(3 * STORE_TIMEOUT_MS + 300 + 1_000);
    expect(ownerEvents).toEqual(["claimed", "completed"]);
    expect(replay.status).toBe(201);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(reply.body)).toBe(true);
    expect(ledger.of(key)).toHaveLength(1);
  });

  it("down past all 3 attempts: the response is still delivered, store-error on complete; 409 until the lease ends, then a retry runs again (the documented window)", async () => {
    const [owner, witness] = (await startServers(2, config(), "complete-failed")) as [
      FaultServer,
      FaultServer,
    ];
    const key = `complete-failed-${SEED}`;
    const PAUSE_MS = 2_500;
    const claimedAt = performance.now();
    const { reply, afterReleaseMs, pausedAt } = await completeDuringPause(owner, key, PAUSE_MS);
    const ownerEvents = owner.eventsOf(key);
    await sleep(Math.max(0, pausedAt + PAUSE_MS + 200 - performance.now()));
    // The attempts Redis ran after the pause were past their deadlines: the record is still the claim.
    const state = await control.hget(`idempotency:${identityOf(key)}`, "state");
    const during = await post({ port: witness.port, key });
    await sleep(Math.max(0, claimedAt + LEASE_MS + 500 - performance.now()));
    const after = await post({ port: witness.port, key });
    const replay = await post({ port: owner.port, key });
    const rows = ledger.of(key);
    report(
      "store-faults/complete-failed",
      `storeTimeoutMs ${STORE_TIMEOUT_MS}, leaseMs ${LEASE_MS}; CLIENT PAUSE ${PAUSE_MS} WRITE as the handler ` +
        `answered: the client got ${reply.status} ${afterReleaseMs.toFixed(0)} ms after (3 attempts); owner ` +
        `events ${typesOf(ownerEvents).join(" → ")} ("${ownerEvents[1]?.error}"); record after the pause: ` +
        `${state}; retry within the lease: ${during.status} ${problemType(during)}; after the lease: ` +
        `${after.status}${after.headers["idempotent-replayed"] ? " replayed" : " (ran again)"}; ledger ` +
        `${rows.length} executions (pids ${rows.map((row) => row.pid).join(", ")})`,
      { requests: 4, faults: 1, executions: rows.length, records: 1 },
    );

    // Delivered anyway, after exactly the bounded retry: 3 attempts of STORE_TIMEOUT_MS, 100 + 200 ms apart,
    // and well before the store came back.
    expect(reply.status).toBe(201);
    expect(reply.body.toString("utf8")).toBe(rows[0]?.body);
    expect(afterReleaseMs).toBeGreaterThanOrEqual(3 * STORE_TIMEOUT_MS + 300);
    expect(afterReleaseMs).toBeLessThan(PAUSE_MS);
    expect(typesOf(ownerEvents)).toEqual(["claimed", "store-error(complete)"]);
    expect(state).toBe("in-flight");
    expect(during.status).toBe(409);
    expect(problemType(during)).toBe("urn:idempotency:problem:in-progress");
    expect(Number(during.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    // The one case where a successful handler runs twice without a crash, as docs/guarantees.md says.
    expect(after.status).toBe(201);
    expect(after.headers["idempotent-replayed"]).toBeUndefined();
    expect(rows.map((row) => row.pid)).toEqual([owner.pid, witness.pid]);
    expect(after.body.toString("utf8")).toBe(rows[1]?.body);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(after.body)).toBe(true);
  });
});

describe("the SQLite file write-locked by another process right after the handler succeeded (complete fails)", () => {
  const LOCKER = fileURLToPath(new URL("./support/sqlite-locker.mjs", import.meta.url));
  const BUSY_TIMEOUT_MS = 400;

  it("each of the 3 attempts waits out the busy timeout; the response is still delivered with store-error on complete; 409 until the lease ends, then a retry runs again", async () => {
    const sqlitePath = join(dir, "store-complete.db");
    const [owner, witness] = (await startServers(
      2,
      { store: "sqlite", sqlitePath, busyTimeoutMs: BUSY_TIMEOUT_MS, leaseMs: LEASE_MS },
      "sqlite-complete",
    )) as [FaultServer, FaultServer];
    const key = `sqlite-complete-${SEED}`;
    const claimedAt = performance.now();
    const pending = post({ port: owner.port, key, hold: true, timeoutMs: HANG_MS });
    await owner.until(() => owner.started.some((s) => s.key === key), "the handler started");
    const locker: ChildProcess = fork(LOCKER, [sqlitePath, "IMMEDIATE"], {
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    const lockerExited = new Promise((resolve) => locker.once("exit", resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        locker.once("message", () => resolve());
        locker.once("exit", (code) => reject(new Error(`the locker exited with ${code}`)));
      });
      const releasedAt = performance.now();
      owner.release(key);
      const reply = await pending;
      const afterReleaseMs = performance.now() - releasedAt;
      await owner.until(() => owner.eventsOf(key).length >= 2, "the owner reported how the completion ended");
      const ownerEvents = typesOf(owner.eventsOf(key));
      locker.send({ type: "release" });
      await lockerExited;
      const during = await post({ port: witness.port, key });
      await sleep(Math.max(0, claimedAt + LEASE_MS + 500 - performance.now()));
      const after = await post({ port: witness.port, key });
      const replay = await post({ port: owner.port, key });
      const rows = ledger.of(key);
      report(
        "store-faults/sqlite-complete-failed",
        `busyTimeoutMs ${BUSY_TIMEOUT_MS}, leaseMs ${LEASE_MS}; another process took the write lock as the ` +
          `handler answered: the client got ${reply.status} ${afterReleaseMs.toFixed(0)} ms after (3 attempts); ` +
          `owner events ${ownerEvents.join(" → ")}; lock released: retry within the lease ${during.status} ` +
          `${problemType(during)}; after the lease ${after.status}` +
          `${after.headers["idempotent-replayed"] ? " replayed" : " (ran again)"}; ledger ${rows.length} executions`,
        { requests: 4, faults: 1, executions: rows.length, records: 1 },
      );

      expect(reply.status).toBe(201);
      expect(reply.body.toString("utf8")).toBe(rows[0]?.body);
      // 3 synchronous attempts of BUSY_TIMEOUT_MS each, 100 + 200 ms apart; never a hang.
      expect(afterReleaseMs).toBeGreaterThanOrEqual(3 * BUSY_TIMEOUT_MS + 300);
      expect(afterReleaseMs).toBeLessThan(3 * BUSY_TIMEOUT_MS + 300 + 1_500);
      expect(ownerEvents).toEqual(["claimed", "store-error(complete)"]);
      expect(during.status).toBe(409);
      expect(problemType(during)).toBe("urn:idempotency:problem:in-progress");
      expect(after.status).toBe(201);
      expect(after.headers["idempotent-replayed"]).toBeUndefined();
      expect(rows.map((row) => row.pid)).toEqual([owner.pid, witness.pid]);
      expect(after.body.toString("utf8")).toBe(rows[1]?.body);
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.body.equals(after.body)).toBe(true);
      for (const server of [owner, witness]) expect(server.stderr, server.name).toBe("");
    } finally {
      locker.kill("SIGKILL");
    }
  });
});
