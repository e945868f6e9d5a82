/**
 * Races across processes: 4 Express server processes behind one store, 2,000 requests over 100 keys with
 * heavy duplication from 8 client connection pools. The side effect is counted in a ledger outside the
 * servers and the store: each key's handler must run exactly once, and every response must be the original,
 * a byte-exact replay, or a 409.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PostgresStore } from "@idempotency/postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { SEED, seeded } from "./support/random.js";
import { startSingle } from "./support/redis.js";
import { report, tally } from "./support/report.js";
import { problemType, type Reply, ServerProcess, send } from "./support/servers.js";

const PROCESSES = 4;
const KEYS = 100;
const REQUESTS = 2_000;
const CLIENTS = 8;
const SOCKETS_PER_CLIENT = 4;
const HANDLER_MS = 25;

/** The PostgreSQL the postgres rows use, as the @idempotency/postgres tests do; a missing one fails the run. */
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

describe.each(["sqlite", "redis", "postgres"] as const)("4 server processes on one %s store", (storeKind) => {
  let dir: string;
  let ledger: Ledger;
  let redis: Awaited<ReturnType<typeof startSingle>> | undefined;
  let servers: ServerProcess[] = [];
  let postgres: pg.Pool | undefined;
  const postgresTable = `idempotency_races_${process.pid}_${Date.now().toString(36)}`;

  beforeAll(async () => {
    if (storeKind === "postgres") {
      postgres = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
      await new PostgresStore({ pool: postgres, table: postgresTable }).createTable();
    }
    dir = mkdtempSync(join(tmpdir(), `idempotency-races-${storeKind}-`));
    ledger = new Ledger(join(dir, "ledger.db"));
    if (storeKind === "redis") redis = await startSingle({ honourRedisUrl: false });
    servers = await Promise.all(
      Array.from({ length: PROCESSES }, (_, i) =>
        ServerProcess.start(
          {
            binding: "express",
            store: storeKind,
            sqlitePath: join(dir, "store.db"),
            redisUrl: redis?.url,
            databaseUrl: DATABASE_URL,
            postgresTable,
            ledgerPath: ledger.path,
            leaseMs: 5_000,
          },
          `express#${i}`,
        ),
      ),
    );
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await redis?.stop();
    await postgres?.query(`DROP TABLE IF EXISTS ${postgresTable}`);
    await postgres?.end();
    ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("2,000 requests over 100 keys: each key's side effect happens exactly once; every response is the original, a byte-exact replay or a 409", async () => {
    const random = seeded(SEED);
    const keys = Array.from({ length: KEYS }, (_, i) => `${storeKind}-race-${SEED}-${i}`);
    // 20 requests per key; each key's requests cluster in time (a key's index plus up to 8 keys of jitter),
    // so duplicates of one key are in flight together (409s) and keep coming after it completed (replays).
    const plan = Array.from({ length: REQUESTS }, (_, i) => ({
      key: keys[i % KEYS] as string,
      order: (i % KEYS) + random() * 8,
      server: Math.floor(random() * PROCESSES),
    })).sort((a, b) => a.order - b.order);

    const replies: Array<{ key: string; server: number; reply: Reply }> = [];
    const failures: string[] = [];
    const agents = Array.from(
      { length: CLIENTS },
      () => new Agent({ keepAlive: true, maxSockets: SOCKETS_PER_CLIENT }),
    );
    const started = performance.now();
    let next = 0;
    // CLIENTS × SOCKETS_PER_CLIENT request loops, each taking the next planned request.
    await Promise.all(
      Array.from({ length: CLIENTS * SOCKETS_PER_CLIENT }, async (_, loop) => {
        const agent = agents[loop % CLIENTS] as Agent;
        while (next < plan.length) {
          const { key, server } = plan[next++] as (typeof plan)[number];
          const port = (servers[server] as ServerProcess).port;
          try {
            replies.push({ key, server, reply: await send({ port, key, handlerMs: HANDLER_MS, agent }) });
          } catch (error) {
            failures.push(`${key} → server ${server}: ${String(error)}`);
          }
        }
      }),
    );
    const wallMs = performance.now() - started;
    for (const agent of agents) agent.destroy();

    const executions = ledger.all().filter((row) => row.key.startsWith(`${storeKind}-race-${SEED}-`));
    const counts = new Map<string, number>();
    for (const row of executions) counts.set(row.key, (counts.get(row.key) ?? 0) + 1);
    const replayed = replies.filter(({ reply }) => reply.headers["idempotent-replayed"] === "true");
    const originals = replies.filter(
      ({ reply }) => reply.status === 201 && reply.headers["idempotent-replayed"] === undefined,
    );
    const conflicts = replies.filter(({ reply }) => reply.status === 409);
    const latencies = replies.map(({ reply }) => reply.ms).sort((a, b) => a - b);
    const fiveXx = replies.filter(({ reply }) => reply.status >= 500).length;
    report(
      `races/${storeKind}`,
      `seed ${SEED}; ${replies.length + failures.length} requests to ${PROCESSES} processes from ` +
        `${CLIENTS}×${SOCKETS_PER_CLIENT} connections in ${wallMs.toFixed(0)} ms; statuses ` +
        `${tally(replies.map(({ reply }) => reply.status))}; ${originals.length} originals, ` +
        `${replayed.length} replays, ${conflicts.length} 409s, ${failures.length} transport errors; ` +
        `${executions.length} ledger executions over ${counts.size} keys (max ${Math.max(0, ...counts.values())} ` +
        `per key); latency p50 ${latencies[latencies.length >> 1]?.toFixed(1)} ms, max ` +
        `${latencies[latencies.length - 1]?.toFixed(1)} ms; executing pids ${tally(executions.map((row) => row.pid))}`,
      { requests: replies.length + failures.length, executions: executions.length, records: KEYS, fiveXx },
    );

    expect(failures).toEqual([]);
    expect(replies).toHaveLength(REQUESTS);
    // Exactly one execution per key, counted outside the servers and the store.
    expect([...counts.entries()].sort()).toEqual(keys.map((key) => [key, 1]).sort());
    const executionOf = new Map(executions.map((row) => [row.key, row]));
    // Exactly one original per key, and it is what the ledger says that execution sent.
    expect(originals.map(({ key }) => key).sort()).toEqual([...keys].sort());
    for (const { key, reply } of originals) {
      expect(reply.body.toString("utf8")).toBe(executionOf.get(key)?.body);
    }
    // Everything else: a byte-exact replay of that same response, or a 409 in-progress.
    for (const { key, reply } of replies) {
      if (reply.status === 201) {
        expect(reply.body.equals(Buffer.from(executionOf.get(key)?.body ?? ""))).toBe(true);
        expect(reply.headers["x-execution"]).toBe(executionOf.get(key)?.execution);
      } else {
        expect(reply.status, `${key}: ${reply.body.toString("utf8")}`).toBe(409);
        expect(problemType(reply)).toBe("urn:idempotency:problem:in-progress");
        expect(Number(reply.headers["retry-after"])).toBeGreaterThanOrEqual(1);
      }
    }
    expect(replayed.length + originals.length + conflicts.length).toBe(REQUESTS);
    for (const server of servers) expect(server.stderr, server.name).toBe("");
  });
});
