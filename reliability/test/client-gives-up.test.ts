/**
 * The client gives up, the handler goes on: the client disconnects on its own timeout while the handler runs
 * for 3 leases, and retries with backoff the whole time. The lease follows the handler, not the client: the
 * handler runs exactly once on every binding (each in its own server process) and under `run()`; every retry
 * gets 409 in-progress until it completes, then the byte-exact replay of what it produced after its client
 * left.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createIdempotency, IdempotencyInProgressError } from "@idempotency/core";
import { SqliteStore } from "@idempotency/sqlite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ledger } from "./support/ledger.js";
import { SEED } from "./support/random.js";
import { report, tally } from "./support/report.js";
import { BINDINGS, problemType, type Reply, ServerProcess, send, sleep } from "./support/servers.js";

const LEASE_MS = 400;
const HANDLER_MS = 3 * LEASE_MS;
const CLIENT_TIMEOUT_MS = 150;
/** The client's backoff between retries: 50, 100, 200, 200, … ms. */
const backoff = (attempt: number) => Math.min(200, 50 * 2 ** attempt);

let dir: string;
let ledger: Ledger;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "idempotency-gives-up-"));
  ledger = new Ledger(join(dir, "ledger.db"));
});
afterAll(() => {
  ledger?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("a client that times out and retries while the handler keeps running for 3 leases", () => {
  const servers: ServerProcess[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
  });

  it.each(BINDINGS)(
    "%s: one execution; 409 in-progress until it completes, then its byte-exact replay",
    async (binding) => {
      const server = await ServerProcess.start({
        binding,
        store: "sqlite",
        sqlitePath: join(dir, `${binding}.db`),
        ledgerPath: ledger.path,
        leaseMs: LEASE_MS,
      });
      servers.push(server);
      const key = `${binding}-gives-up-${SEED}`;

      const started = performance.now();
      const first = await send({
        port: server.port,
        key,
        handlerMs: HANDLER_MS,
        timeoutMs: CLIENT_TIMEOUT_MS,
      }).then(
        (reply) => `answered ${reply.status}`,
        (error: Error) => error.message,
      );
      const retries: Array<{ reply: Reply; atMs: number }> = [];
      for (let attempt = 0; ; attempt++) {
        // The same request again: the retry of a client that gave up carries the same body.
        const reply = await send({ port: server.port, key, handlerMs: HANDLER_MS });
        retries.push({ reply, atMs: performance.now() - started });
        if (reply.status !== 409 || performance.now() - started > 10_000) break;
        await sleep(backoff(attempt));
      }
      const last = (retries[retries.length - 1] as { reply: Reply; atMs: number }).reply;
      const rows = ledger.of(key);
      report(
        `client-gives-up/${binding}`,
        `leaseMs ${LEASE_MS}, handler ${HANDLER_MS} ms; first request: ${first} after ${CLIENT_TIMEOUT_MS} ms; ` +
          `${retries.length} retries with backoff over ${(retries[retries.length - 1]?.atMs ?? 0).toFixed(0)} ms: ` +
          `${tally(retries.map(({ reply }) => `${reply.status}${reply.headers["idempotent-replayed"] ? "r" : ""}`))}; ` +
          `${rows.length} execution(s) in the ledger`,
        {
          requests: 1 + retries.length,
          faults: 1,
          executions: rows.length,
          records: 1,
          fiveXx: retries.filter(({ reply }) => reply.status >= 500).length,
        },
      );

      expect(first).toBe("timeout");
      expect(rows).toHaveLength(1);
      for (const { reply } of retries.slice(0, -1)) {
        expect(reply.status).toBe(409);
        expect(problemType(reply)).toBe("urn:idempotency:problem:in-progress");
      }
      // The retries kept coming for longer than the lease: the lease was renewed after the client left.
      const conflictsUntil = retries[retries.length - 2]?.atMs ?? 0;
      expect(conflictsUntil).toBeGreaterThan(2 * LEASE_MS);
      expect(last.status).toBe(201);
      expect(last.headers["idempotent-replayed"]).toBe("true");
      expect(last.body.toString("utf8")).toBe(rows[0]?.body);
      expect(last.headers["x-execution"]).toBe(rows[0]?.execution);
      expect(server.stderr).toBe("");
    },
  );
});

describe("run(): a caller that stops waiting and retries while the function keeps running for 3 leases", () => {
  it("one execution; IdempotencyInProgressError until it completes, then its result", async () => {
    const store = new SqliteStore({ path: join(dir, "run.db") });
    const idempotency = createIdempotency({ store, scope: "global", leaseMs: LEASE_MS });
    const key = `run-gives-up-${SEED}`;
    let executions = 0;
    const job = async () => {
      executions++;
      await sleep(HANDLER_MS);
      return { executed: executions, at: Date.now() };
    };

    const started = performance.now();
    const firstCall = idempotency.run(key, job, { fingerprint: "job" });
    const gaveUp = await Promise.race([
      firstCall.then(() => false),
      sleep(CLIENT_TIMEOUT_MS).then(() => true),
    ]);
    const attempts: string[] = [];
    let result: unknown;
    for (let attempt = 0; ; attempt++) {
      try {
        result = await idempotency.run(key, job, { fingerprint: "job" });
        attempts.push("result");
        break;
      } catch (error) {
        if (!(error instanceof IdempotencyInProgressError) || performance.now() - started > 10_000)
          throw error;
        attempts.push(error.code);
        await sleep(backoff(attempt));
      }
    }
    const elapsedMs = performance.now() - started;
    const original = await firstCall;
    report(
      "client-gives-up/run",
      `leaseMs ${LEASE_MS}, function ${HANDLER_MS} ms; caller gave up after ${CLIENT_TIMEOUT_MS} ms: ${gaveUp}; ` +
        `${attempts.length} retries over ${elapsedMs.toFixed(0)} ms: ${tally(attempts)}; ${executions} execution(s)`,
      { requests: 1 + attempts.length, faults: 1, executions, records: 1 },
    );
    await store.close();

    expect(gaveUp).toBe(true);
    expect(executions).toBe(1);
    expect(attempts.length).toBeGreaterThan(2);
    expect(attempts).toEqual([...attempts.slice(0, -1).map(() => "ERR_IDEMPOTENCY_IN_PROGRESS"), "result"]);
    expect(elapsedMs).toBeGreaterThan(HANDLER_MS);
    expect(result).toEqual(original);
  });
});
