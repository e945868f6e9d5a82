/**
 * Races on a Redis Cluster: 3 masters started by the test (`--cluster-enabled yes`, joined with
 * `redis-cli --cluster create`, ready at `cluster_state:ok`), 4 Express server processes whose `RedisStore`
 * runs on an ioredis `Cluster` client, 2,000 requests over 100 keys with heavy duplication from 8 client
 * connection pools. Each key's side effect happens exactly once in the ledger; every response is the
 * original, a byte-exact replay, or a 409; the records spread over all three masters. A missing
 * `redis-server` or `redis-cli` fails the file; nothing is skipped.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../../packages/redis/test/support/redis-server.js";
import { FaultServer, identityOf, post } from "./support/fault-servers.js";
import { Ledger } from "./support/ledger.js";
import { SEED, seeded } from "./support/random.js";
import { report, tally } from "./support/report.js";
import { problemType, type Reply } from "./support/servers.js";

const PROCESSES = 4;
const KEYS = 100;
const REQUESTS = 2_000;
const CLIENTS = 8;
const SOCKETS_PER_CLIENT = 4;
const HANDLER_MS = 25;

describe("4 server processes on one RedisStore over a 3-master Redis Cluster", () => {
  let dir: string;
  let ledger: Ledger;
  let cluster: Awaited<ReturnType<typeof startCluster>>;
  let inspector: Cluster;
  let servers: FaultServer[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "idempotency-cluster-"));
    ledger = new Ledger(join(dir, "ledger.db"));
    try {
      cluster = await startCluster();
    } catch (error) {
      throw new Error(
        `could not start a 3-master Redis Cluster (redis-server and redis-cli must be on PATH: ` +
          `apt-get install -y redis-server): ${String(error)}`,
      );
    }
    inspector = cluster.client();
    const redisCluster = cluster.servers.map((server) => `127.0.0.1:${server.port}`);
    servers = await Promise.all(
      Array.from({ length: PROCESSES }, (_, i) =>
        FaultServer.start(
          { store: "redis-cluster", redisCluster, ledgerPath: ledger.path, leaseMs: 5_000 },
          `express#${i}`,
        ),
      ),
    );
  });

  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await cluster?.stop();
    ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("2,000 requests over 100 keys: each key's side effect happens exactly once; every response is the original, a byte-exact replay or a 409", async () => {
    const random = seeded(SEED);
    const keys = Array.from({ length: KEYS }, (_, i) => `cluster-race-${SEED}-${i}`);
    // 20 requests per key, clustered in time (a key's index plus up to 8 keys of jitter), so duplicates of
    // one key are in flight together (409s) and keep coming after it completed (replays).
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
    await Promise.all(
      Array.from({ length: CLIENTS * SOCKETS_PER_CLIENT }, async (_, loop) => {
        const agent = agents[loop % CLIENTS] as Agent;
        while (next < plan.length) {
          const { key, server } = plan[next++] as (typeof plan)[number];
          const port = (servers[server] as FaultServer).port;
          try {
            replies.push({ key, server, reply: await post({ port, key, handlerMs: HANDLER_MS, agent }) });
          } catch (error) {
            failures.push(`${key} → server ${server}: ${String(error)}`);
          }
        }
      }),
    );
    const wallMs = performance.now() - started;
    for (const agent of agents) agent.destroy();

    // Where the records are: one hash per key, on the master that owns its slot.
    const states = await Promise.all(
      keys.map((key) => inspector.hget(`idempotency:${identityOf(key)}`, "state")),
    );
    const perMaster = await Promise.all(
      keys.map(async (key) => {
        const slot = Number(await inspector.call("CLUSTER", "KEYSLOT", `idempotency:${identityOf(key)}`));
        const owner = (inspector.slots[slot] ?? [])[0];
        return owner ?? "unknown";
      }),
    );
    const executions = ledger.all().filter((row) => row.key.startsWith(`cluster-race-${SEED}-`));
    const counts = new Map<string, number>();
    for (const row of executions) counts.set(row.key, (counts.get(row.key) ?? 0) + 1);
    const replayed = replies.filter(({ reply }) => reply.headers["idempotent-replayed"] === "true");
    const originals = replies.filter(
      ({ reply }) => reply.status === 201 && reply.headers["idempotent-replayed"] === undefined,
    );
    const conflicts = replies.filter(({ reply }) => reply.status === 409);
    const latencies = replies.map(({ reply }) => reply.ms).sort((a, b) => a - b);
    const events = servers.flatMap((server) => server.events);
    report(
      "cluster/races",
      `seed ${SEED}; 3 masters on ports ${cluster.servers.map((server) => server.port).join("/")}; ` +
        `${replies.length + failures.length} requests to ${PROCESSES} processes from ${CLIENTS}×` +
        `${SOCKETS_PER_CLIENT} connections in ${wallMs.toFixed(0)} ms; statuses ` +
        `${tally(replies.map(({ reply }) => reply.status))}; ${originals.length} originals, ${replayed.length} ` +
        `replays, ${conflicts.length} 409s, ${failures.length} transport errors; ${executions.length} ledger ` +
        `executions over ${counts.size} keys (max ${Math.max(0, ...counts.values())} per key); records per ` +
        `master ${tally(perMaster)}, states ${tally(states.map(String))}; events ${tally(events.map((e) => e.type))}; ` +
        `latency p50 ${latencies[latencies.length >> 1]?.toFixed(1)} ms, max ` +
        `${latencies[latencies.length - 1]?.toFixed(1)} ms`,
      {
        requests: replies.length + failures.length,
        executions: executions.length,
        records: KEYS,
        fiveXx: replies.filter(({ reply }) => reply.status >= 500).length,
      },
    );

    expect(failures).toEqual([]);
    expect(replies).toHaveLength(REQUESTS);
    // Exactly one execution per key, counted outside the servers and the store.
    expect([...counts.entries()].sort()).toEqual(keys.map((key) => [key, 1]).sort());
    const executionOf = new Map(executions.map((row) => [row.key, row]));
    expect(originals.map(({ key }) => key).sort()).toEqual([...keys].sort());
    for (const { key, reply } of originals)
      expect(reply.body.toString("utf8")).toBe(executionOf.get(key)?.body);
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
    // Every record completed, and the records spread over all three masters (no hash tag pins them).
    expect(states).toEqual(keys.map(() => "completed"));
    expect(new Set(perMaster).size).toBe(3);
    expect(perMaster).not.toContain("unknown");
    expect(events.filter((event) => event.type === "store-error")).toEqual([]);
    for (const server of servers) expect(server.stderr, server.name).toBe("");
  });
});
