/**
 * A lease really lost, with real short leases: the owner's event loop blocked past the lease, every renewal
 * failing past the lease (its Redis connection black-holed), and the owner process frozen (SIGSTOP) past the
 * lease. Each time another process takes the key over after the lease ended; the stale owner then runs into
 * the fence: its completion (or renewal) is refused for its token, the new owner's record survives (every
 * later replay carries the new owner's body), the stale owner reports `lease-lost`, and its own client still
 * gets its response. The control: blocked past the lease with nobody taking over, the late owner still
 * completes, since its token still owns the record.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FaultServer, type FaultServerConfig, post, type ReportedEvent } from "./support/fault-servers.js";
import { Ledger } from "./support/ledger.js";
import { FaultyProxy } from "./support/proxy.js";
import { SEED } from "./support/random.js";
import { startSingle } from "./support/redis.js";
import { report } from "./support/report.js";
import { type Reply, sleep } from "./support/servers.js";

const LEASE_MS = 500;
/** Below the lease (the engine requires it) and generous for a loaded 2-core machine. */
const STORE_TIMEOUT_MS = 250;
/** How long past the lease the heir waits before it takes over: the lease has surely ended by then. */
const PAST_LEASE_MS = LEASE_MS + 400;

describe("a lease really lost: the stale owner is fenced, the new owner's record survives", () => {
  let dir: string;
  let ledger: Ledger;
  let redis: Awaited<ReturnType<typeof startSingle>>;
  let proxy: FaultyProxy;
  const servers: FaultServer[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "idempotency-lease-lost-"));
    ledger = new Ledger(join(dir, "ledger.db"));
    redis = await startSingle({ honourRedisUrl: false });
    proxy = await FaultyProxy.start(redis.server?.port as number);
  });

  afterEach(async () => {
    proxy.heal();
    await Promise.all(servers.splice(0).map((server) => server.stop()));
  });

  afterAll(async () => {
    await proxy?.close();
    await redis?.stop();
    ledger?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(name: string, redisUrl: string): Promise<FaultServer> {
    const config: FaultServerConfig = {
      store: "redis",
      redisUrl,
      ledgerPath: ledger.path,
      leaseMs: LEASE_MS,
      storeTimeoutMs: STORE_TIMEOUT_MS,
    };
    const server = await FaultServer.start(config, name);
    servers.push(server);
    // The first call of a RedisStore learns the server clock and loads the scripts: not part of the scenario.
    expect((await post({ port: server.port, key: `${name}-warm-up-${SEED}` })).status).toBe(201);
    return server;
  }

  const typesOf = (events: ReportedEvent[]) =>
    events.map((event) => (event.operation ? `${event.type}(${event.operation})` : event.type));

  /**
   * What every way of losing the lease ends in: the stale owner answered its own client with its own body,
   * the heir's takeover is what the record holds, and the ledger has exactly the two executions.
   */
  async function expectFenced(
    key: string,
    owner: FaultServer,
    heir: FaultServer,
    stale: Reply,
    takeover: Reply,
  ): Promise<Reply[]> {
    const rows = ledger.of(key);
    expect(rows.map((row) => row.pid)).toEqual([owner.pid, heir.pid]);
    // The stale owner's response still reached its client, unchanged.
    expect(stale.status).toBe(201);
    expect(stale.headers["idempotent-replayed"]).toBeUndefined();
    expect(stale.body.toString("utf8")).toBe(rows[0]?.body);
    // The heir took the key over and ran.
    expect(takeover.status).toBe(201);
    expect(takeover.headers["idempotent-replayed"]).toBeUndefined();
    expect(takeover.body.toString("utf8")).toBe(rows[1]?.body);
    expect(heir.eventsOf(key).map((event) => [event.type, event.takeover])).toEqual([
      ["claimed", true],
      ["completed", undefined],
    ]);
    // The record is the heir's: every later request, through either process, replays the heir's body.
    const replays = [
      await post({ port: owner.port, key }),
      await post({ port: heir.port, key }),
      await post({ port: owner.port, key }),
    ];
    for (const replay of replays) {
      expect(replay.status).toBe(201);
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.body.equals(takeover.body)).toBe(true);
    }
    expect(ledger.of(key)).toHaveLength(2);
    for (const server of [owner, heir]) expect(server.stderr, server.name).toBe("");
    return replays;
  }

  it("the event loop blocked for 4 leases: the heir takes over, the owner's completion is refused (lease-lost on complete)", async () => {
    const owner = await start("owner", redis.url);
    const heir = await start("heir", redis.url);
    const key = `blocked-${SEED}`;
    const blockMs = 4 * LEASE_MS;

    const pending = post({ port: owner.port, key, blockMs });
    await owner.until(() => owner.started.some((s) => s.key === key), "the owner's handler started");
    const startedAt = performance.now();
    await sleep(PAST_LEASE_MS);
    const takeover = await post({ port: heir.port, key });
    const takeoverAtMs = performance.now() - startedAt;
    const stale = await pending;
    await owner.until(() => owner.eventsOf(key).length >= 2, "the owner reported how its request ended");
    await sleep(200); // anything else the owner had to report about this request has arrived by now
    const ownerEvents = typesOf(owner.eventsOf(key));
    const replays = await expectFenced(key, owner, heir, stale, takeover);
    report(
      "lease-lost/blocked-event-loop",
      `leaseMs ${LEASE_MS}; the owner's handler blocked its event loop for ${blockMs} ms (no renewal could ` +
        `run); the heir took over ${takeoverAtMs.toFixed(0)} ms after the block began: ${takeover.status}; ` +
        `the owner answered its client after ${stale.ms.toFixed(0)} ms: ${stale.status}; owner events ` +
        `${ownerEvents.join(" → ")}; replays: ${replays.length}× the heir's body; ledger ` +
        `${ledger.of(key).length} executions (owner, heir)`,
      { requests: 2 + replays.length, faults: 1, executions: 2, records: 1 },
    );

    // The blocked handler never renewed, and its completion met the heir's token: refused, reported.
    expect(ownerEvents).toEqual(["claimed", "lease-lost(complete)"]);
    expect(stale.headers["x-signal-aborted"]).toBe("false"); // nothing could tell it while it was blocked
    expect(stale.ms).toBeGreaterThanOrEqual(blockMs);
  });

  it("every renewal failing for longer than the lease (connection black-holed): lease-lost on the first renewal after the heal, no completion attempted", async () => {
    const owner = await start("owner", proxy.url);
    const heir = await start("heir", redis.url);
    const key = `renewals-failing-${SEED}`;

    const pending = post({ port: owner.port, key, hold: true });
    await owner.until(() => owner.started.some((s) => s.key === key), "the owner's handler started");
    proxy.blackHole();
    const holedAt = performance.now();
    await sleep(PAST_LEASE_MS);
    const takeover = await post({ port: heir.port, key });
    const failedRenewals = owner
      .eventsOf(key)
      .filter((event) => event.type === "store-error" && event.operation === "extend").length;
    proxy.heal();
    const healedAfterMs = performance.now() - holedAt;
    await owner.until(
      () => owner.eventsOf(key).some((event) => event.type === "lease-lost"),
      "the owner found out it lost its lease",
    );
    const foundOutMs = performance.now() - holedAt - healedAfterMs;
    owner.release(key);
    const stale = await pending;
    await sleep(300); // a completion attempt, if any were made, would be answered and reported by now
    const ownerEvents = typesOf(owner.eventsOf(key));
    const replays = await expectFenced(key, owner, heir, stale, takeover);
    report(
      "lease-lost/renewals-failing",
      `leaseMs ${LEASE_MS}, storeTimeoutMs ${STORE_TIMEOUT_MS}; the owner's Redis connection black-holed for ` +
        `${healedAfterMs.toFixed(0)} ms while its handler ran: ${failedRenewals} renewals failed (store-error); ` +
        `the heir took over: ${takeover.status}; healed: the owner found out ${foundOutMs.toFixed(0)} ms later ` +
        `(events ${ownerEvents.join(" → ")}), its signal aborted; its client got ` +
        `${stale.status} with its own body; replays: ${replays.length}× the heir's body`,
      { requests: 2 + replays.length, faults: 1 + failedRenewals, executions: 2, records: 1 },
    );

    expect(failedRenewals).toBeGreaterThanOrEqual(1);
    // Only failed renewals while cut off, then one lease-lost from the first renewal that got an answer;
    // the execution stopped there: no completion was attempted, so nothing else is reported.
    expect(ownerEvents[0]).toBe("claimed");
    expect(ownerEvents[ownerEvents.length - 1]).toBe("lease-lost(extend)");
    expect(new Set(ownerEvents.slice(1, -1))).toEqual(new Set(["store-error(extend)"]));
    expect(stale.headers["x-signal-aborted"]).toBe("true");
    expect(foundOutMs).toBeLessThan(LEASE_MS + 1_000);
  });

  it("the owner process frozen (SIGSTOP) past its lease: the heir takes over; thawed, its first renewal is refused (lease-lost on extend) and nothing of it is stored", async () => {
    const owner = await start("owner", redis.url);
    const heir = await start("heir", redis.url);
    const key = `frozen-${SEED}`;

    // The handler still has 2 leases to go when the owner thaws, so the overdue renewal finds out first.
    const pending = post({ port: owner.port, key, handlerMs: PAST_LEASE_MS + 2 * LEASE_MS });
    await owner.until(() => owner.started.some((s) => s.key === key), "the owner's handler started");
    owner.freeze();
    const frozenAt = performance.now();
    await sleep(PAST_LEASE_MS);
    const takeover = await post({ port: heir.port, key });
    owner.thaw();
    const frozenMs = performance.now() - frozenAt;
    await owner.until(
      () => owner.eventsOf(key).some((event) => event.type === "lease-lost"),
      "the thawed owner found out it lost its lease",
    );
    const foundOutMs = performance.now() - frozenAt - frozenMs;
    const stale = await pending;
    await sleep(300); // a completion attempt, if any were made, would be answered and reported by now
    const ownerEvents = typesOf(owner.eventsOf(key));
    const replays = await expectFenced(key, owner, heir, stale, takeover);
    report(
      "lease-lost/process-frozen",
      `leaseMs ${LEASE_MS}; the owner (pid ${owner.pid}) SIGSTOPped ${frozenMs.toFixed(0)} ms mid-handler; ` +
        `the heir (pid ${heir.pid}) took over: ${takeover.status}; thawed, the owner found out within ` +
        `${foundOutMs.toFixed(0)} ms (signal aborted: ${stale.headers["x-signal-aborted"]}), then answered its ` +
        `client: ${stale.status} with its own body; owner events ${ownerEvents.join(" → ")}; ` +
        `replays: ${replays.length}× the heir's body`,
      { requests: 2 + replays.length, faults: 1, executions: 2, records: 1 },
    );

    // Thawed, the overdue renewal meets the heir's token: lease lost, signal aborted, no completion attempted.
    expect(ownerEvents).toEqual(["claimed", "lease-lost(extend)"]);
    expect(stale.headers["x-signal-aborted"]).toBe("true");
    expect(foundOutMs).toBeLessThan(1_000);
  });

  it("the control: the event loop blocked past the lease with nobody taking over, the late owner still completes (its lease expired, its token still owns the record)", async () => {
    const owner = await start("owner", redis.url);
    const witness = await start("witness", redis.url);
    const key = `blocked-alone-${SEED}`;
    const blockMs = 3 * LEASE_MS;

    const reply = await post({ port: owner.port, key, blockMs });
    await owner.until(() => owner.eventsOf(key).length >= 2, "the owner reported how its request ended");
    await sleep(200);
    const ownerEvents = typesOf(owner.eventsOf(key));
    const replay = await post({ port: witness.port, key });
    report(
      "lease-lost/blocked-nobody-took-over",
      `leaseMs ${LEASE_MS}; the owner's handler blocked its event loop for ${blockMs} ms and nobody asked ` +
        `for the key meanwhile: its client got ${reply.status} after ${reply.ms.toFixed(0)} ms; owner events ` +
        `${ownerEvents.join(" → ")}; replay from another process: ${replay.status}` +
        `${replay.headers["idempotent-replayed"] ? " replayed" : ""}; ledger ${ledger.of(key).length}`,
      { requests: 2, faults: 1, executions: 1, records: 1 },
    );

    expect(reply.status).toBe(201);
    expect(ownerEvents).toEqual(["claimed", "completed"]);
    expect(replay.status).toBe(201);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(reply.body)).toBe(true);
    expect(ledger.of(key).map((row) => row.pid)).toEqual([owner.pid]);
  });
});
