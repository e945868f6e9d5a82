import { type ChildProcess, fork } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createIdempotency, type IdempotencyRequest } from "@idempotency/core";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { SqliteStore } from "../src/index.js";
import { tempDirectory } from "./support.js";

const WORKER = fileURLToPath(new URL("./workers/engine-worker.mjs", import.meta.url));
const directory = tempDirectory();

interface Outcome {
  key: string;
  kind: "executed" | "replayed" | "answered" | "passed" | "returned";
  status: number;
  headers?: Record<string, string>;
  body: string;
}
interface Result {
  type: "result";
  prefix: string;
  outcomes: Array<Outcome | null>;
  errors: string[];
  events: Array<{ type: string; takeover?: boolean; error?: string }>;
}

/** A child process on the worker script, with its stderr kept for failure messages. */
class Worker {
  readonly child: ChildProcess;
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #messages: unknown[] = [];
  readonly #waiting: Array<(message: unknown) => void> = [];

  constructor(args: string[]) {
    this.child = fork(WORKER, args, { stdio: ["ignore", "inherit", "pipe", "ipc"] });
    this.child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8");
    });
    this.child.on("message", (message) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(message);
      else this.#messages.push(message);
    });
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => resolve({ code, signal }));
    });
    workers.push(this);
  }

  /** The next message, or a failure carrying the child's stderr if it exits first. */
  next<T>(): Promise<T> {
    const queued = this.#messages.shift();
    if (queued !== undefined) return Promise.resolve(queued as T);
    return new Promise<T>((resolve, reject) => {
      this.#waiting.push(resolve as (message: unknown) => void);
      void this.exited.then(({ code, signal }) =>
        reject(new Error(`worker exited (code ${code}, signal ${signal}) before replying:\n${this.stderr}`)),
      );
    });
  }

  send(message: unknown): void {
    this.child.send(message as object);
  }
}

const workers: Worker[] = [];
afterEach(() => {
  for (const worker of workers.splice(0)) if (worker.child.exitCode === null) worker.child.kill("SIGKILL");
});

function integrity(file: string): string {
  const db = new Database(file);
  try {
    return db.pragma("integrity_check", { simple: true }) as string;
  } finally {
    db.close();
  }
}

/** How many times each key's handler ran, from the files the handlers left. */
function executionsPerKey(executionsDir: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const name of readdirSync(executionsDir)) {
    const key = name.split(".")[0] as string;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

describe("several processes on one database file", () => {
  it("4 processes firing the same 100 keys at once, 5 times: every handler runs exactly once, with no errors", async () => {
    const file = `${directory}/storm.db`;
    const executionsDir = `${directory}/storm-executions`;
    mkdirSync(executionsDir);
    const KEYS = 100;
    const PROCESSES = 4;
    const ROUNDS = 5;
    const team = Array.from(
      { length: PROCESSES },
      (_, i) => new Worker(["storm", file, executionsDir, `w${i}`, String(KEYS)]),
    );
    for (const worker of team) expect(await worker.next<{ type: string }>()).toEqual({ type: "ready" });

    /** All processes fire requests for the keys `<prefix>-0` to `<prefix>-99` at once. */
    async function fireAll(prefix: string): Promise<Result[]> {
      for (const worker of team) worker.send({ type: "go", prefix });
      const results = await Promise.all(team.map((worker) => worker.next<Result>()));
      for (const [i, result] of results.entries()) {
        expect(result.errors, `errors in w${i}, ${prefix}`).toEqual([]);
        expect(result.outcomes).toHaveLength(KEYS);
      }
      return results;
    }

    // Several races on fresh keys: a lost race is a matter of microseconds between processes.
    const bodies = new Map<string, string>();
    for (let round = 1; round <= ROUNDS; round++) {
      const prefix = `race${round}`;
      const results = await fireAll(prefix);
      for (const [i, result] of results.entries()) {
        expect(
          result.events.filter((e) => e.type === "store-error" || e.type === "lease-lost"),
          `store errors in w${i}, ${prefix}`,
        ).toEqual([]);
      }
      const outcomes = results.flatMap((result) => result.outcomes) as Outcome[];
      const executed = outcomes.filter((o) => o.kind === "executed");
      expect(executed.map((o) => o.key).sort(), `executions in ${prefix}`).toEqual(
        Array.from({ length: KEYS }, (_, i) => `${prefix}-${i}`).sort(),
      );
      for (const o of executed) bodies.set(o.key, o.body);
      // Everyone else was told the key was in progress (409) or got the executor's response replayed.
      for (const outcome of outcomes.filter((o) => o.kind !== "executed")) {
        if (outcome.kind === "replayed") {
          expect(outcome.status).toBe(201);
          expect(outcome.headers?.["idempotent-replayed"]).toBe("true");
          expect(outcome.body).toBe(bodies.get(outcome.key));
        } else {
          expect(outcome.kind).toBe("answered");
          expect(outcome.status).toBe(409);
          expect(JSON.parse(outcome.body).type).toBe("urn:idempotency:problem:in-progress");
        }
      }
      const claims = results.flatMap((result) => result.events).filter((e) => e.type === "claimed");
      expect(claims).toHaveLength(KEYS);
    }
    // Every handler ran exactly once, counted by its side effect.
    const executions = executionsPerKey(executionsDir);
    expect(executions.size).toBe(ROUNDS * KEYS);
    expect([...executions.values()].every((count) => count === 1)).toBe(true);

    // Afterwards every request of every process is a replay of the one execution.
    const replays = await fireAll("race1");
    for (const result of replays) {
      expect(result.events.filter((e) => e.type !== "replayed")).toEqual([]);
      for (const outcome of result.outcomes as Outcome[]) {
        expect(outcome.kind).toBe("replayed");
        expect(outcome.status).toBe(201);
        expect(outcome.body).toBe(bodies.get(outcome.key));
      }
    }
    expect(executionsPerKey(executionsDir)).toEqual(executions);

    for (const worker of team) worker.send({ type: "exit" });
    for (const worker of team) expect(await worker.exited).toEqual({ code: 0, signal: null });
    expect(integrity(file)).toBe("ok");
  }, 120_000);

  it("4 processes running the same 100 jobs through run() with waitMs: each runs once, every call gets its result", async () => {
    const file = `${directory}/run-storm.db`;
    const executionsDir = `${directory}/run-storm-executions`;
    mkdirSync(executionsDir);
    const team = Array.from(
      { length: 4 },
      (_, i) => new Worker(["run-storm", file, executionsDir, `w${i}`, "100"]),
    );
    for (const worker of team) expect(await worker.next<{ type: string }>()).toEqual({ type: "ready" });
    for (const worker of team) worker.send({ type: "go", prefix: "job" });
    const results = await Promise.all(team.map((worker) => worker.next<Result>()));
    for (const worker of team) worker.send({ type: "exit" });

    for (const result of results) {
      expect(result.errors).toEqual([]);
      expect(result.events.filter((e) => !["claimed", "completed", "replayed"].includes(e.type))).toEqual([]);
    }
    const executions = executionsPerKey(executionsDir);
    expect(executions.size).toBe(100);
    expect([...executions.values()].every((count) => count === 1)).toBe(true);
    const outcomes = results.flatMap((result) => result.outcomes) as Outcome[];
    expect(outcomes).toHaveLength(400);
    const byKey = new Map<string, Set<string>>();
    for (const outcome of outcomes)
      byKey.set(outcome.key, (byKey.get(outcome.key) ?? new Set()).add(outcome.body));
    for (const [key, bodies] of byKey) {
      expect(bodies.size, `results of ${key}`).toBe(1);
      expect(JSON.parse([...bodies][0] as string)).toEqual({
        key,
        executedBy: expect.stringMatching(/^w[0-3]$/),
      });
    }
    for (const worker of team) expect(await worker.exited).toEqual({ code: 0, signal: null });
    expect(integrity(file)).toBe("ok");
  }, 120_000);

  it("a process killed while holding a claim corrupts nothing, and another process takes over after the lease", async () => {
    const file = `${directory}/killed.db`;
    const executionsDir = `${directory}/killed-executions`;
    mkdirSync(executionsDir);
    const leaseMs = 5_000;
    const holder = new Worker(["hold", file, executionsDir, "holder", String(leaseMs)]);
    const claimed = await holder.next<{
      type: string;
      events: Array<{ type: string; takeover?: boolean }>;
    }>();
    expect(claimed).toEqual({ type: "claimed", events: [expect.objectContaining({ type: "claimed" })] });
    holder.child.kill("SIGKILL");
    expect(await holder.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(integrity(file)).toBe("ok");

    // This test process is another process: while the lease runs, the key is in progress.
    const store = new SqliteStore({ path: file });
    const inspector = new Database(file, { readonly: true });
    try {
      const body = new TextEncoder().encode(JSON.stringify({ key: "held", amount: 100 }));
      const request: IdempotencyRequest = {
        method: "POST",
        path: "/payments",
        query: "",
        headers: new Headers({ "idempotency-key": "held", "content-type": "application/json" }),
        body: async () => body,
        native: null,
      };
      const idempotency = createIdempotency({ store, scope: "global", leaseMs });
      const during = await idempotency.handle(request);
      expect(during.action).toBe("respond");
      if (during.action === "respond") expect(during.response.status).toBe(409);

      // Wait out the lease the killed process last renewed, then let a fresh process send the retry.
      const row = inspector.prepare("SELECT token, lease_until FROM idempotency_records").get() as {
        token: string | null;
        lease_until: number;
      };
      expect(row.token).toMatch(/^[0-9a-f-]{36}$/);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, row.lease_until - Date.now()) + 100));

      const successor = new Worker(["takeover", file, executionsDir, "successor", String(leaseMs)]);
      const result = await successor.next<{
        outcome: Outcome;
        events: Array<{ type: string; takeover?: boolean }>;
      }>();
      expect(result.events.map((e) => e.type)).toEqual(["claimed", "completed"]);
      expect(result.events[0]?.takeover).toBe(true);
      expect(result.outcome).toEqual({
        key: "held",
        kind: "executed",
        status: 201,
        body: JSON.stringify({ key: "held", executedBy: "successor" }),
      });
      expect(await successor.exited).toEqual({ code: 0, signal: null });
      // The killed process had started the handler, so it ran twice: the documented "run-again" default.
      expect(executionsPerKey(executionsDir)).toEqual(new Map([["held", 2]]));

      const after = await idempotency.handle(request);
      expect(after.action).toBe("respond");
      if (after.action === "respond") {
        expect(after.replayed).toBe(true);
        expect(Buffer.from(after.response.body).toString("utf8")).toBe(
          JSON.stringify({ key: "held", executedBy: "successor" }),
        );
      }
    } finally {
      inspector.close();
      await store.close();
    }
    expect(integrity(file)).toBe("ok");
  }, 60_000);

  it("a process killed in the middle of writing large responses leaves every record whole", async () => {
    const file = `${directory}/churn.db`;
    const writer = new Worker(["churn", file]);
    expect(await writer.next()).toEqual({ type: "busy" });
    writer.child.kill("SIGKILL");
    expect((await writer.exited).signal).toBe("SIGKILL");

    expect(integrity(file)).toBe("ok");
    const db = new Database(file, { readonly: true });
    try {
      const rows = db
        .prepare("SELECT token, length(response) AS bytes FROM idempotency_records")
        .all() as Array<{ token: string | null; bytes: number | null }>;
      expect(rows.length).toBeGreaterThanOrEqual(21);
      for (const row of rows) {
        // Either claimed and not yet completed, or completed with the whole response: never in between.
        if (row.token === null) expect(row.bytes).toBe(256 * 1024);
        else expect(row.bytes).toBeNull();
      }
      expect(rows.filter((row) => row.token === null).length).toBeGreaterThanOrEqual(21);
    } finally {
      db.close();
    }
    // The next process opens the file normally and uses it.
    const store = new SqliteStore({ path: file });
    expect((await store.get("churn-0"))?.state).toBe("completed");
    await store.close();
  }, 60_000);
});
