import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import {
  createIdempotency,
  type IdempotencyEvent,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  IdempotencyStoreError,
  MemoryStore,
} from "@idempotency/core";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStore } from "../src/index.js";
import { DATABASE_URL } from "./support/database.js";
import { createTableBeforeAll, postgresReachable, uniqueTableName, usePools } from "./support/fixture.js";

const WORKER = fileURLToPath(new URL("./workers/transaction-worker.mjs", import.meta.url));

/** A promise and the function that resolves it: a gate a test opens when it chooses. */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

/** What `promise` rejected with, failing when it resolved. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** A child process on the worker script, its IPC messages queued in order. */
class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";
  readonly #messages: unknown[] = [];
  readonly #waiting: Array<(message: unknown) => void> = [];

  constructor(args: string[]) {
    this.process = fork(WORKER, args, {
      stdio: ["ignore", "inherit", "pipe", "ipc"],
      env: { ...process.env, DATABASE_URL },
    });
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    this.process.on("message", (message) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(message);
      else this.#messages.push(message);
    });
    this.exited = new Promise((resolve) => {
      this.process.on("exit", (code, signal) => resolve({ code, signal }));
    });
  }

  /** The next message; rejects with the child's stderr when it exits first. */
  next<T>(): Promise<T> {
    const queued = this.#messages.shift();
    if (queued !== undefined) return Promise.resolve(queued as T);
    return Promise.race([
      new Promise<T>((resolve) => this.#waiting.push(resolve as (message: unknown) => void)),
      this.exited.then(({ code, signal }) => {
        throw new Error(`worker exited (${code ?? signal}) before answering:\n${this.stderr}`);
      }),
    ]);
  }
}

describe.skipIf(!postgresReachable)("idempotency.transaction() on PostgresStore", () => {
  const table = uniqueTableName("idempotency_tx");
  const orders = uniqueTableName("orders_tx");
  const { pool } = usePools([table, orders]);
  createTableBeforeAll(pool, table);
  beforeAll(async () => {
    await pool().query(
      `CREATE TABLE ${orders} (id serial PRIMARY KEY, key text NOT NULL, worker text NOT NULL)`,
    );
  });

  function engine(options: { waitMs?: number; events?: IdempotencyEvent[]; poolIndex?: number } = {}) {
    return createIdempotency({
      store: new PostgresStore({ pool: pool(options.poolIndex ?? 0), table }),
      scope: "global",
      waitMs: options.waitMs ?? 0,
      onEvent: (event) => options.events?.push(event),
    });
  }

  async function ordersFor(key: string): Promise<Array<{ id: number; worker: string }>> {
    const { rows } = await pool().query(`SELECT id, worker FROM ${orders} WHERE key = $1 ORDER BY id`, [key]);
    return rows;
  }

  async function insertOrder(tx: pg.PoolClient, key: string, worker = "test"): Promise<number> {
    const { rows } = await tx.query(`INSERT INTO ${orders} (key, worker) VALUES ($1, $2) RETURNING id`, [
      key,
      worker,
    ]);
    return rows[0].id as number;
  }

  it("commits the effect with the record, and replays the result without running the function again", async () => {
    const events: IdempotencyEvent[] = [];
    const idempotency = engine({ events });
    const key = `order-${randomUUID()}`;
    let runs = 0;
    const work = async (tx: pg.PoolClient) => {
      runs++;
      return { orderId: await insertOrder(tx, key) };
    };
    const first = await idempotency.transaction(key, work);
    const again = await idempotency.transaction(key, work);
    const rows = await ordersFor(key);
    expect(runs).toBe(1);
    expect(rows).toHaveLength(1);
    expect(first).toEqual({ orderId: rows[0]?.id });
    expect(again).toEqual(first);
    expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
  });

  it("stores an undefined result as a 204 and replays it as undefined", async () => {
    const idempotency = engine();
    const key = `void-${randomUUID()}`;
    let runs = 0;
    const work = async (tx: pg.PoolClient) => {
      runs++;
      await insertOrder(tx, key);
    };
    expect(await idempotency.transaction(key, work)).toBeUndefined();
    expect(await idempotency.transaction(key, work)).toBeUndefined();
    expect(runs).toBe(1);
  });

  it("rolls back the effect and the claim when the function throws, rethrowing its error unchanged", async () => {
    const events: IdempotencyEvent[] = [];
    const idempotency = engine({ events });
    const key = `fails-${randomUUID()}`;
    const failure = new Error("payment declined");
    const thrown = await rejectionOf(
      idempotency.transaction(key, async (tx) => {
        await insertOrder(tx, key);
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    expect(await ordersFor(key)).toHaveLength(0);
    expect(
      await new PostgresStore({ pool: pool(), table }).get((events[0] as { key: string }).key),
    ).toBeNull();
    expect(events.map((event) => event.type)).toEqual(["released"]);
    // The key is free: a retry runs, once.
    const retried = await idempotency.transaction(key, async (tx) => ({
      orderId: await insertOrder(tx, key),
    }));
    expect(await ordersFor(key)).toEqual([{ id: retried.orderId, worker: "test" }]);
  });

  it("refuses the same key with another fingerprint, and replays it with the same one", async () => {
    const idempotency = engine();
    const key = `fp-${randomUUID()}`;
    const work = async (tx: pg.PoolClient) => ({ orderId: await insertOrder(tx, key) });
    const first = await idempotency.transaction(key, work, { fingerprint: '{"total":10}' });
    expect(
      await rejectionOf(idempotency.transaction(key, work, { fingerprint: '{"total":99}' })),
    ).toBeInstanceOf(IdempotencyKeyReusedError);
    expect(await idempotency.transaction(key, work, { fingerprint: '{"total":10}' })).toEqual(first);
    expect(await ordersFor(key)).toHaveLength(1);
  });

  it("keeps scopes apart: two tenants with one key get two effects", async () => {
    const idempotency = engine();
    const key = `shared-${randomUUID()}`;
    const work = async (tx: pg.PoolClient) => ({ orderId: await insertOrder(tx, key) });
    const a = await idempotency.transaction(key, work, { scope: "tenant-a" });
    const b = await idempotency.transaction(key, work, { scope: "tenant-b" });
    expect(a).not.toEqual(b);
    expect(await ordersFor(key)).toHaveLength(2);
  });

  it("answers a duplicate at once with waitMs 0, while the first transaction holds the key", async () => {
    const first = engine({ poolIndex: 0 });
    const duplicate = engine({ poolIndex: 1, waitMs: 0 });
    const key = `busy-${randomUUID()}`;
    const inside = gate();
    const release = gate();
    const running = first.transaction(key, async (tx) => {
      const orderId = await insertOrder(tx, key);
      inside.open();
      await release.opened;
      return { orderId };
    });
    await inside.opened;
    let ran = false;
    const startedAt = performance.now();
    const refused = await rejectionOf(
      duplicate.transaction(key, async () => {
        ran = true;
      }),
    );
    const waitedMs = performance.now() - startedAt;
    release.open();
    await running;
    expect(refused).toBeInstanceOf(IdempotencyInProgressError);
    expect(ran).toBe(false);
    expect(waitedMs).toBeLessThan(1_500);
    expect(await ordersFor(key)).toHaveLength(1);
  });

  it("makes a waiting duplicate return the first transaction's result once it commits", async () => {
    const first = engine({ poolIndex: 0 });
    const duplicate = engine({ poolIndex: 1, waitMs: 10_000 });
    const key = `wait-${randomUUID()}`;
    const inside = gate();
    const release = gate();
    const running = first.transaction(key, async (tx) => {
      const orderId = await insertOrder(tx, key);
      inside.open();
      await release.opened;
      return { orderId };
    });
    await inside.opened;
    let ran = false;
    const waiting = duplicate.transaction(key, async () => {
      ran = true;
      return { orderId: -1 };
    });
    // The duplicate is blocked on the row lock in PostgreSQL, not polling: it answers only after the commit.
    const early = await Promise.race([
      waiting.then(() => "answered"),
      new Promise((r) => setTimeout(r, 200, "waiting")),
    ]);
    release.open();
    const [original, replayed] = await Promise.all([running, waiting]);
    expect(early).toBe("waiting");
    expect(ran).toBe(false);
    expect(replayed).toEqual(original);
    expect(await ordersFor(key)).toHaveLength(1);
  });

  it("lets a waiting duplicate run once the first transaction rolls back", async () => {
    const first = engine({ poolIndex: 0 });
    const duplicate = engine({ poolIndex: 1, waitMs: 10_000 });
    const key = `rollback-${randomUUID()}`;
    const inside = gate();
    const release = gate();
    const running = first.transaction(key, async (tx) => {
      await insertOrder(tx, key, "first");
      inside.open();
      await release.opened;
      throw new Error("first attempt failed");
    });
    await inside.opened;
    const waiting = duplicate.transaction(key, async (tx) => ({
      orderId: await insertOrder(tx, key, "second"),
    }));
    release.open();
    await expect(running).rejects.toThrow("first attempt failed");
    const second = await waiting;
    expect(await ordersFor(key)).toEqual([{ id: second.orderId, worker: "second" }]);
  });

  it("refuses a key claimed outside a transaction while its lease lives", async () => {
    const idempotency = engine();
    const key = `mixed-${randomUUID()}`;
    const inside = gate();
    const release = gate();
    const running = idempotency.run(key, async () => {
      inside.open();
      await release.opened;
      return "ran";
    });
    await inside.opened;
    let ran = false;
    const refused = await rejectionOf(
      idempotency.transaction(key, async () => {
        ran = true;
      }),
    );
    release.open();
    expect(await running).toBe("ran");
    expect(refused).toBeInstanceOf(IdempotencyInProgressError);
    expect(ran).toBe(false);
    // run() and transaction() protect one operation per key: the completed run() result replays.
    expect(await idempotency.transaction(key, async () => "never")).toBe("ran");
  });

  it("reports a statement that failed inside the function: nothing commits", async () => {
    const idempotency = engine();
    const key = `aborted-${randomUUID()}`;
    const thrown = await rejectionOf(
      idempotency.transaction(key, async (tx) => {
        await insertOrder(tx, key);
        await tx.query("SELECT * FROM no_such_table_here").catch(() => undefined); // swallowed by the caller
        return "done";
      }),
    );
    expect(thrown).toBeInstanceOf(IdempotencyStoreError);
    expect((thrown as Error).message).toMatch(/aborted the transaction; nothing was committed/);
    expect(await ordersFor(key)).toHaveLength(0);
    // The key is free.
    expect(await idempotency.transaction(key, async () => "second")).toBe("second");
  });

  it("reports a function that ended the transaction itself", async () => {
    const idempotency = engine();
    const key = `own-commit-${randomUUID()}`;
    const thrown = await rejectionOf(
      idempotency.transaction(key, async (tx) => {
        await insertOrder(tx, key);
        await tx.query("COMMIT");
        return "done";
      }),
    );
    expect(thrown).toBeInstanceOf(IdempotencyStoreError);
    expect((thrown as Error).message).toMatch(/ended the transaction itself/);
  });

  it("refuses statements through the transaction's client once it has ended, and its release", async () => {
    const idempotency = engine();
    const key = `late-${randomUUID()}`;
    // The leftover work runs once the transaction has ended, however long COMMIT takes, and its
    // rejection is observed from the start so it can never surface as unhandled.
    let ended!: () => void;
    const afterEnd = new Promise<void>((resolve) => {
      ended = resolve;
    });
    let late: Promise<unknown> | undefined;
    let released: unknown;
    await idempotency.transaction(key, async (tx) => {
      late = rejectionOf(afterEnd.then(() => insertOrder(tx, key, "late")));
      try {
        tx.release();
      } catch (error) {
        released = error;
      }
      return "returned";
    });
    ended();
    const thrown = await late;
    expect(thrown).toBeInstanceOf(IdempotencyStoreError);
    expect((thrown as Error).message).toMatch(/already ended/);
    expect(released).toBeInstanceOf(IdempotencyStoreError);
    expect(await ordersFor(key)).toHaveLength(0);
  });

  it("rolls back a function still running at maxExecutionMs, aborting its signal", async () => {
    const events: IdempotencyEvent[] = [];
    const idempotency = createIdempotency({
      store: new PostgresStore({ pool: pool(), table }),
      scope: "global",
      leaseMs: 300,
      maxExecutionMs: 300,
      onEvent: (event) => events.push(event),
    });
    const key = `hung-${randomUUID()}`;
    let aborted: unknown;
    const thrown = await rejectionOf(
      idempotency.transaction(key, async (tx, { signal }) => {
        await insertOrder(tx, key);
        await new Promise((resolve) => signal.addEventListener("abort", resolve));
        aborted = signal.reason;
      }),
    );
    expect((thrown as { code?: string }).code).toBe("ERR_IDEMPOTENCY_EXECUTION_LIMIT");
    expect(aborted).toBe(thrown);
    expect(await ordersFor(key)).toHaveLength(0);
    expect(events.map((event) => event.type)).toEqual(["execution-limit", "released"]);
    // The key is free again.
    expect(await idempotency.transaction(key, async () => "second")).toBe("second");
  });

  it("needs a store with transactions, and says which to use", async () => {
    const idempotency = createIdempotency({ store: new MemoryStore(), scope: "global" });
    const thrown = await rejectionOf(idempotency.transaction("k", async () => 1));
    expect((thrown as { code?: string }).code).toBe("ERR_IDEMPOTENCY_NO_TRANSACTIONS");
    expect((thrown as Error).message).toMatch(/PostgresStore, SqliteStore/);
  });

  it("fails as a store error, running nothing, when the table is missing", async () => {
    const idempotency = createIdempotency({
      store: new PostgresStore({ pool: pool(), table: uniqueTableName("missing") }),
      scope: "global",
    });
    let ran = false;
    const thrown = await rejectionOf(
      idempotency.transaction("k", async () => {
        ran = true;
      }),
    );
    expect(thrown).toBeInstanceOf(IdempotencyStoreError);
    expect((thrown as Error).message).toMatch(/createTable/);
    expect(ran).toBe(false);
  });

  describe("a process killed at each point of the transaction", () => {
    const children: Child[] = [];
    afterAll(() => {
      for (const child of children) child.process.kill("SIGKILL");
    });

    it.each([
      ["before-effect", "no effect, no record: the retry runs once"],
      ["after-effect", "the uncommitted effect is rolled back: the retry runs once"],
      ["committed", "the effect and the record committed: the retry replays"],
    ])(
      "killed at %s: %s; exactly one effect in the end",
      async (point) => {
        const key = `crash-${point}-${randomUUID()}`;
        const child = new Child(["crash", point, table, orders, key]);
        children.push(child);
        for (;;) {
          const message = await child.next<{ type: string; point?: string }>();
          if (message.point === point) break;
        }
        child.process.kill("SIGKILL");
        expect((await child.exited).signal).toBe("SIGKILL");
        const before = await ordersFor(key);
        // PostgreSQL ends the dead session's transaction as soon as it notices the closed socket; the retry
        // waits on the row lock until then (waitMs), never runs beside it.
        let runs = 0;
        const retried = await engine({ waitMs: 10_000 }).transaction(key, async (tx) => {
          runs++;
          return { orderId: await insertOrder(tx, key, "retry") };
        });
        const after = await ordersFor(key);
        expect(after).toHaveLength(1);
        if (point === "committed") {
          expect(before).toHaveLength(1);
          expect(runs).toBe(0);
          expect(retried).toEqual({ orderId: before[0]?.id });
        } else {
          expect(before).toHaveLength(0);
          expect(runs).toBe(1);
          expect(after).toEqual([{ id: retried.orderId, worker: "retry" }]);
        }
      },
      60_000,
    );
  });

  it("4 processes racing on the same 25 keys: one effect per key, every caller gets that effect's result", async () => {
    const keys = 25;
    const workers = Array.from(
      { length: 4 },
      (_, i) => new Child(["race", table, orders, `w${i}`, String(keys)]),
    );
    await Promise.all(workers.map((worker) => worker.next()));
    for (const worker of workers) worker.process.send("go");
    type Outcome = { key: string; ran: boolean; result?: { key: string; worker: string }; error?: string };
    const results = await Promise.all(workers.map((worker) => worker.next<{ outcomes: Outcome[] }>()));
    const outcomes = results.flatMap((result) => result.outcomes);
    expect(outcomes.filter((outcome) => outcome.error !== undefined)).toEqual([]);
    const { rows } = await pool().query<{ key: string; worker: string; n: string }>(
      `SELECT key, min(worker) AS worker, count(*) AS n FROM ${orders} WHERE key LIKE 'race-%' GROUP BY key`,
    );
    expect(rows).toHaveLength(keys);
    expect(rows.every((row) => row.n === "1")).toBe(true);
    const effectOf = new Map(rows.map((row) => [row.key, row.worker]));
    expect(outcomes.filter((outcome) => outcome.ran)).toHaveLength(keys);
    for (const outcome of outcomes)
      expect(outcome.result).toEqual({ key: outcome.key, worker: effectOf.get(outcome.key) });
    await Promise.all(workers.map((worker) => worker.exited));
  }, 60_000);
});
