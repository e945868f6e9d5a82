import { randomBytes, randomUUID } from "node:crypto";
import type { IdempotencyOptions } from "@idempotency/core";
import { PostgresStore } from "@idempotency/postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpRequest } from "./client.js";
import type { RunningApp } from "./types.js";

/** The PostgreSQL the transactional cases use; trust auth on the local server by default. */
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** What the shared `POST /orders` handler answers; the binding sends it as JSON with `status`. */
export interface TransactionalAnswer {
  status: number;
  body: unknown;
  /** The binding calls its `notStarted(...)` before answering. */
  notStarted?: boolean;
}

/**
 * The shared handler of `POST /orders` in transactional mode: `tx` is what the binding's
 * `idempotencyTransaction(...)` returned for the request, `body` the parsed JSON body. It writes an order
 * through `tx`, and then, as the body asks: fails with a 500 (`fail`), declares `notStarted` (a 422), holds
 * until the test opens its gate (`hold`), or writes a row that breaks a deferred constraint, so that
 * `COMMIT` fails (`breakCommit`).
 */
export type TransactionalRoute = (tx: unknown, body: unknown) => Promise<TransactionalAnswer>;

/** What a binding's app factory gets for the transactional cases. */
export interface TransactionalSetup {
  /** Pass these, unchanged, to the binding's `idempotency(options)` (they include `transactional: true`). */
  options: IdempotencyOptions;
  /** Serve `POST /orders` (JSON body) with this, behind the middleware. */
  route: TransactionalRoute;
}

/**
 * The transactional mode of a binding, against a real PostgreSQL (`DATABASE_URL`): the handler's writes
 * through `idempotencyTransaction(...)` commit with the stored response or not at all. Under `CI=true` an
 * unreachable PostgreSQL fails the cases; elsewhere they print one line and do not run.
 *
 * @example
 * ```ts
 * describeTransactionalBinding("express", (setup) => startTransactionalApp(setup));
 * ```
 */
export function describeTransactionalBinding(
  name: string,
  start: (setup: TransactionalSetup) => Promise<RunningApp>,
): void {
  describe(`${name} transactional mode (PostgreSQL)`, () => {
    const suffix = randomBytes(5).toString("hex");
    const records = `idempotency_tx_http_${suffix}`;
    const orders = `orders_tx_http_${suffix}`;
    const deferred = `deferred_tx_http_${suffix}`;
    const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
    pool.on("error", () => undefined);
    const apps: RunningApp[] = [];
    let reachable = false;
    const gates = new Map<string, () => void>();
    const entered = new Map<string, () => void>();

    beforeAll(async () => {
      try {
        await pool.query("SELECT 1");
        reachable = true;
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        if (process.env.CI === "true") {
          throw new Error(
            `PostgreSQL is not reachable at DATABASE_URL (${reason}); CI=true: these cases must run.`,
          );
        }
        console.log(`${name} transactional mode: NOT RUN, no PostgreSQL at DATABASE_URL (${reason}).`);
        return;
      }
      await new PostgresStore({ pool, table: records }).createTable();
      await pool.query(`CREATE TABLE ${orders} (id serial PRIMARY KEY, key text NOT NULL)`);
      await pool.query(`CREATE TABLE ${deferred} (v int UNIQUE DEFERRABLE INITIALLY DEFERRED)`);
    });
    afterAll(async () => {
      for (const app of apps) await app.close();
      if (reachable) {
        for (const table of [records, orders, deferred]) await pool.query(`DROP TABLE IF EXISTS ${table}`);
      }
      await pool.end();
    });

    const route: TransactionalRoute = async (tx, raw) => {
      const body = raw as {
        key: string;
        fail?: boolean;
        notStarted?: boolean;
        hold?: boolean;
        breakCommit?: boolean;
      };
      if (typeof (tx as { query?: unknown } | undefined)?.query !== "function") {
        return { status: 500, body: { error: "no transaction" } };
      }
      const client = tx as pg.PoolClient;
      const { rows } = await client.query(`INSERT INTO ${orders} (key) VALUES ($1) RETURNING id`, [body.key]);
      if (body.hold) {
        entered.get(body.key)?.();
        await new Promise<void>((resolve) => gates.set(body.key, resolve));
      }
      if (body.breakCommit) await client.query(`INSERT INTO ${deferred} (v) VALUES (1), (1)`);
      if (body.fail) return { status: 500, body: { error: "failed after writing" } };
      if (body.notStarted) return { status: 422, body: { error: "invalid" }, notStarted: true };
      return { status: 201, body: { orderId: rows[0].id } };
    };

    async function app(overrides: Partial<IdempotencyOptions> = {}): Promise<string> {
      const options: IdempotencyOptions = {
        store: new PostgresStore({ pool, table: records }),
        scope: "global",
        transactional: true,
        ...overrides,
      };
      const running = await start({ options, route });
      apps.push(running);
      return running.url;
    }
    const ordersFor = async (key: string) =>
      (await pool.query(`SELECT id FROM ${orders} WHERE key = $1`, [key])).rows.length;
    const recordCount = async () =>
      Number((await pool.query(`SELECT count(*) AS n FROM ${records}`)).rows[0].n);

    it("commits the handler's writes with the stored response; a retry gets the byte-exact replay", async (context) => {
      if (!reachable) return context.skip();
      const url = await app();
      const key = randomUUID();
      const json = JSON.stringify({ key });
      const first = await httpRequest(`${url}/orders`, { key, json });
      const again = await httpRequest(`${url}/orders`, { key, json });
      expect(first.status).toBe(201);
      expect(again.status).toBe(201);
      expect(again.headers["idempotent-replayed"]).toBe("true");
      expect(again.body.equals(first.body)).toBe(true);
      expect(await ordersFor(key)).toBe(1);
    });

    it("rolls the writes back when the response is not stored (a 500): no effect, no record, a retry runs", async (context) => {
      if (!reachable) return context.skip();
      const url = await app();
      const key = randomUUID();
      const before = await recordCount();
      const failed = await httpRequest(`${url}/orders`, { key, json: JSON.stringify({ key, fail: true }) });
      expect(failed.status).toBe(500);
      expect(failed.json()).toEqual({ error: "failed after writing" });
      expect(await ordersFor(key)).toBe(0);
      expect(await recordCount()).toBe(before);
      const retried = await httpRequest(`${url}/orders`, { key, json: JSON.stringify({ key }) });
      expect(retried.status).toBe(201);
      expect(await ordersFor(key)).toBe(1);
    });

    it("rolls back a request that declared notStarted, and delivers its answer", async (context) => {
      if (!reachable) return context.skip();
      const url = await app();
      const key = randomUUID();
      const refused = await httpRequest(`${url}/orders`, {
        key,
        json: JSON.stringify({ key, notStarted: true }),
      });
      expect(refused.status).toBe(422);
      expect(await ordersFor(key)).toBe(0);
      const retried = await httpRequest(`${url}/orders`, {
        key,
        json: JSON.stringify({ key, notStarted: true }),
      });
      expect(retried.status).toBe(422);
      expect(retried.headers["idempotent-replayed"]).toBeUndefined();
    });

    it("answers 503 instead of the handler's 201 when COMMIT fails: the client never sees an effect that is not there", async (context) => {
      if (!reachable) return context.skip();
      const url = await app();
      const key = randomUUID();
      const failed = await httpRequest(`${url}/orders`, {
        key,
        json: JSON.stringify({ key, breakCommit: true }),
      });
      expect(failed.status).toBe(503);
      expect(failed.headers["content-type"]).toBe("application/problem+json");
      expect((failed.json() as { type: string }).type).toBe("urn:idempotency:problem:store-unavailable");
      expect(failed.headers["content-length"]).toBe(String(failed.body.length));
      expect(await ordersFor(key)).toBe(0);
      const retried = await httpRequest(`${url}/orders`, { key, json: JSON.stringify({ key }) });
      expect(retried.status).toBe(201);
      expect(await ordersFor(key)).toBe(1);
    });

    it("answers a duplicate 409 while the first transaction holds the key, then replays", async (context) => {
      if (!reachable) return context.skip();
      const url = await app();
      const key = randomUUID();
      const json = JSON.stringify({ key, hold: true });
      const inside = new Promise<void>((resolve) => entered.set(key, resolve));
      const first = httpRequest(`${url}/orders`, { key, json });
      await inside;
      const duplicate = await httpRequest(`${url}/orders`, { key, json });
      gates.get(key)?.();
      const original = await first;
      const replay = await httpRequest(`${url}/orders`, { key, json });
      expect(duplicate.status).toBe(409);
      expect((duplicate.json() as { type: string }).type).toBe("urn:idempotency:problem:in-progress");
      expect(original.status).toBe(201);
      expect(replay.body.equals(original.body)).toBe(true);
      expect(await ordersFor(key)).toBe(1);
    });

    it("rolls back a handler still running at maxExecutionMs, and answers 503 when it finally responds", async (context) => {
      if (!reachable) return context.skip();
      let limited!: () => void;
      const limitPassed = new Promise<void>((resolve) => {
        limited = resolve;
      });
      const url = await app({
        leaseMs: 300,
        maxExecutionMs: 300,
        onEvent: (event) => {
          if (event.type === "execution-limit") limited();
        },
      });
      const key = randomUUID();
      const json = JSON.stringify({ key, hold: true });
      const inside = new Promise<void>((resolve) => entered.set(key, resolve));
      const first = httpRequest(`${url}/orders`, { key, json });
      await inside;
      await limitPassed;
      // The transaction is gone: the key is free at once, and the handler's late 201 must not reach the client.
      const retried = await httpRequest(`${url}/orders`, { key, json: JSON.stringify({ key }) });
      gates.get(key)?.();
      const late = await first;
      expect(retried.status).toBe(201);
      expect(late.status).toBe(503);
      expect(await ordersFor(key)).toBe(1);
    });

    it("makes a duplicate with waitMs wait on the row lock and get the replay", async (context) => {
      if (!reachable) return context.skip();
      const url = await app({ waitMs: 10_000 });
      const key = randomUUID();
      const json = JSON.stringify({ key, hold: true });
      const inside = new Promise<void>((resolve) => entered.set(key, resolve));
      const first = httpRequest(`${url}/orders`, { key, json });
      await inside;
      const duplicate = httpRequest(`${url}/orders`, { key, json });
      setTimeout(() => gates.get(key)?.(), 100);
      const [original, waited] = await Promise.all([first, duplicate]);
      expect(original.status).toBe(201);
      expect(waited.status).toBe(201);
      expect(waited.headers["idempotent-replayed"]).toBe("true");
      expect(waited.body.equals(original.body)).toBe(true);
      expect(await ordersFor(key)).toBe(1);
    });
  });
}
