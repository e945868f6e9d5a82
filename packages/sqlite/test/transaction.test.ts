import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  createIdempotency,
  type IdempotencyEvent,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  IdempotencyStoreError,
} from "@idempotency/core";
import Database from "better-sqlite3";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/index.js";
import { tempDirectory } from "./support.js";

const WORKER = fileURLToPath(new URL("./workers/transaction-worker.mjs", import.meta.url));
const directory = tempDirectory("idempotency-sqlite-tx-");

/** What `promise` rejected with, failing when it resolved. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection");
}

/** A database file with an `orders` table beside the records, as an application would have. */
function appDatabase(): { file: string; db: Database.Database } {
  const file = join(directory, `${randomUUID()}.db`);
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, key TEXT NOT NULL, worker TEXT NOT NULL)");
  return { file, db };
}

/** A child process on the worker script, its stdout read line by line. */
class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";
  readonly #lines: string[] = [];
  readonly #waiting: Array<(line: string) => void> = [];

  constructor(args: string[]) {
    this.process = spawn(process.execPath, [WORKER, ...args], { stdio: ["pipe", "pipe", "pipe"] });
    this.process.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    createInterface({ input: this.process.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(line);
      else this.#lines.push(line);
    });
    this.exited = new Promise((resolve) => {
      this.process.on("exit", (code, signal) => resolve({ code, signal }));
    });
    children.push(this);
  }

  next(): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return Promise.race([
      new Promise<string>((resolve) => this.#waiting.push(resolve)),
      this.exited.then(({ code, signal }) => {
        throw new Error(`worker exited (${code ?? signal}) before answering:\n${this.stderr}`);
      }),
    ]);
  }
}
const children: Child[] = [];
afterAll(() => {
  for (const child of children) child.process.kill("SIGKILL");
});

describe("idempotency.transaction() on SqliteStore", () => {
  let app: { file: string; db: Database.Database };
  let events: IdempotencyEvent[];
  beforeEach(() => {
    app = appDatabase();
    events = [];
  });

  function engine(options: { waitMs?: number; db?: Database.Database } = {}) {
    return createIdempotency({
      store: new SqliteStore({ database: options.db ?? app.db }),
      scope: "global",
      waitMs: options.waitMs ?? 0,
      onEvent: (event) => events.push(event),
    });
  }

  const insertOrder = (tx: Database.Database, key: string, worker = "test") =>
    Number(tx.prepare("INSERT INTO orders (key, worker) VALUES (?, ?)").run(key, worker).lastInsertRowid);
  const ordersFor = (key: string) =>
    app.db.prepare("SELECT id, worker FROM orders WHERE key = ? ORDER BY id").all(key) as Array<{
      id: number;
      worker: string;
    }>;

  it("commits the effect with the record, and replays the result without running the function again", async () => {
    const idempotency = engine();
    let runs = 0;
    const work = (tx: Database.Database) => {
      runs++;
      return { orderId: insertOrder(tx, "a") };
    };
    const first = await idempotency.transaction("a", work);
    const again = await idempotency.transaction("a", work);
    expect(runs).toBe(1);
    expect(ordersFor("a")).toEqual([{ id: first.orderId, worker: "test" }]);
    expect(again).toEqual(first);
    expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
  });

  it("rolls back the effect and the claim when the function throws, rethrowing its error unchanged", async () => {
    const idempotency = engine();
    const failure = new Error("payment declined");
    const thrown = await rejectionOf(
      idempotency.transaction("a", (tx) => {
        insertOrder(tx, "a");
        throw failure;
      }),
    );
    expect(thrown).toBe(failure);
    expect(ordersFor("a")).toEqual([]);
    expect(app.db.prepare("SELECT count(*) AS n FROM idempotency_records").get()).toEqual({ n: 0 });
    expect(events.map((event) => event.type)).toEqual(["released"]);
    const retried = await idempotency.transaction("a", (tx) => ({ orderId: insertOrder(tx, "a") }));
    expect(ordersFor("a")).toEqual([{ id: retried.orderId, worker: "test" }]);
  });

  it("passes a constraint error of the caller's own statement through unchanged, committing nothing", async () => {
    app.db.exec("CREATE TABLE payments (id TEXT PRIMARY KEY)");
    app.db.prepare("INSERT INTO payments (id) VALUES ('p1')").run();
    const thrown = await rejectionOf(
      engine().transaction("dup", (tx) => {
        insertOrder(tx, "dup");
        tx.prepare("INSERT INTO payments (id) VALUES ('p1')").run();
      }),
    );
    expect((thrown as { code?: string }).code).toBe("SQLITE_CONSTRAINT_PRIMARYKEY");
    expect(ordersFor("dup")).toEqual([]);
  });

  it("refuses the same key with another fingerprint", async () => {
    const idempotency = engine();
    const work = (tx: Database.Database) => insertOrder(tx, "k");
    const first = await idempotency.transaction("k", work, { fingerprint: "a" });
    expect(await rejectionOf(idempotency.transaction("k", work, { fingerprint: "b" }))).toBeInstanceOf(
      IdempotencyKeyReusedError,
    );
    expect(await idempotency.transaction("k", work, { fingerprint: "a" })).toBe(first);
    expect(ordersFor("k")).toHaveLength(1);
  });

  it("refuses an async function before anything runs: its writes after an await would escape", async () => {
    let ran = false;
    const thrown = await rejectionOf(
      engine().transaction("k", async () => {
        ran = true;
      }),
    );
    expect(thrown).toBeInstanceOf(TypeError);
    expect((thrown as Error).message).toMatch(/synchronously/);
    expect(ran).toBe(false);
  });

  it("rolls back a function that returns a promise anyway", async () => {
    const thrown = await rejectionOf(
      engine().transaction("k", (tx) => {
        insertOrder(tx, "k");
        return Promise.resolve(1);
      }),
    );
    expect(thrown).toBeInstanceOf(TypeError);
    expect(ordersFor("k")).toEqual([]);
    expect(await engine().transaction("k", () => "free")).toBe("free");
  });

  it("reports a function that ended the transaction itself", async () => {
    const thrown = await rejectionOf(
      engine().transaction("k", (tx) => {
        tx.exec("COMMIT");
      }),
    );
    expect(thrown).toBeInstanceOf(IdempotencyStoreError);
    expect((thrown as Error).message).toMatch(/ended the transaction itself/);
  });

  it("answers at once with waitMs 0 while another connection holds the write lock", async () => {
    const idempotency = engine({ waitMs: 0 });
    await idempotency.transaction("warm-up", () => undefined); // the store's first use creates its table
    const other = new Database(app.file);
    other.exec("BEGIN IMMEDIATE");
    let ran = false;
    const startedAt = performance.now();
    const thrown = await rejectionOf(
      idempotency.transaction("k", () => {
        ran = true;
      }),
    );
    const waitedMs = performance.now() - startedAt;
    other.exec("ROLLBACK");
    other.close();
    expect(thrown).toBeInstanceOf(IdempotencyInProgressError);
    expect(ran).toBe(false);
    expect(waitedMs).toBeLessThan(1_000);
  });

  it("waits up to waitMs for the write lock without blocking the event loop, then runs", async () => {
    const idempotency = engine({ waitMs: 5_000 });
    await idempotency.transaction("warm-up", () => undefined);
    const other = new Database(app.file);
    other.exec("BEGIN IMMEDIATE");
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    setTimeout(() => other.exec("ROLLBACK"), 100);
    const result = await idempotency.transaction("k", (tx) => insertOrder(tx, "k"));
    clearInterval(ticker);
    other.close();
    expect(ordersFor("k")).toEqual([{ id: result, worker: "test" }]);
    expect(ticks).toBeGreaterThan(3);
  });

  it.each([
    ["before-effect", "no effect, no record: the retry runs once"],
    ["after-effect", "the uncommitted effect is rolled back: the retry runs once"],
    ["committed", "the effect and the record committed: the retry replays"],
  ])(
    "a process killed at %s: %s; exactly one effect in the end",
    async (point) => {
      app.db.close();
      const key = `crash-${point}`;
      const child = new Child(["crash", point, app.file, key]);
      for (;;) {
        if ((await child.next()) === `point ${point}`) break;
      }
      child.process.kill("SIGKILL");
      expect((await child.exited).signal).toBe("SIGKILL");
      // The dead process's write lock went with it; its uncommitted WAL frames are ignored.
      app.db = new Database(app.file);
      const before = ordersFor(key);
      let runs = 0;
      const retried = await engine().transaction(key, (tx) => {
        runs++;
        return { orderId: insertOrder(tx, key, "retry") };
      });
      const after = ordersFor(key);
      expect(after).toHaveLength(1);
      if (point === "committed") {
        expect(before).toHaveLength(1);
        expect(runs).toBe(0);
        expect(retried).toEqual({ orderId: before[0]?.id });
      } else {
        expect(before).toEqual([]);
        expect(runs).toBe(1);
        expect(after).toEqual([{ id: retried.orderId, worker: "retry" }]);
      }
    },
    60_000,
  );

  it("4 processes racing on the same 25 keys of one file: one effect per key, every caller gets its result", async () => {
    // The records table exists before the workers start, as after any first use.
    await engine().transaction("warm-up", () => undefined);
    const keys = 25;
    const workers = Array.from({ length: 4 }, (_, i) => new Child(["race", app.file, `w${i}`, String(keys)]));
    for (const worker of workers) expect(await worker.next()).toBe("ready");
    for (const worker of workers) worker.process.stdin?.write("go\n");
    type Outcome = { key: string; ran: boolean; result?: { key: string; worker: string }; error?: string };
    const outcomes = (await Promise.all(workers.map((worker) => worker.next()))).flatMap(
      (line) => JSON.parse(line.replace(/^result /, "")) as Outcome[],
    );
    expect(outcomes.filter((outcome) => outcome.error !== undefined)).toEqual([]);
    const rows = app.db
      .prepare(
        "SELECT key, min(worker) AS worker, count(*) AS n FROM orders WHERE key LIKE 'race-%' GROUP BY key",
      )
      .all() as Array<{ key: string; worker: string; n: number }>;
    expect(rows).toHaveLength(keys);
    expect(rows.every((row) => row.n === 1)).toBe(true);
    expect(outcomes.filter((outcome) => outcome.ran)).toHaveLength(keys);
    const effectOf = new Map(rows.map((row) => [row.key, row.worker]));
    for (const outcome of outcomes) {
      expect(outcome.result).toEqual({ key: outcome.key, worker: effectOf.get(outcome.key) });
    }
  }, 60_000);
});
