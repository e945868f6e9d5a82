// A child process for the transaction tests: plain JavaScript importing the BUILT packages by name, so it
// runs what users get. The parent drives it over the fork IPC channel and counts effects in PostgreSQL.
//
//   node transaction-worker.mjs crash <point> <table> <orders> <key>
//     runs one idempotency.transaction() whose effect inserts an order, reporting each point it passes
//     ("before-effect", "after-effect" inside the transaction, "committed" after it returned); at <point> it
//     stops and waits to be killed.
//   node transaction-worker.mjs race <table> <orders> <workerId> <keys>
//     says "ready", and on "go" runs transaction() for keys race-0 … race-<keys - 1> at once, each
//     inserting one order, duplicates waiting up to 20 s; reports every outcome.
import { createIdempotency } from "@idempotency/core";
import { PostgresStore } from "@idempotency/postgres";
import pg from "pg";

const [mode, ...args] = process.argv.slice(2);
const send = (message) => new Promise((resolve) => process.send(message, resolve));
const forever = () => new Promise(() => setInterval(() => {}, 60_000));

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
pool.on("error", () => undefined);

if (mode === "crash") {
  const [point, table, orders, key] = args;
  const idempotency = createIdempotency({ store: new PostgresStore({ pool, table }), scope: "global" });
  const reach = async (name) => {
    await send({ type: "point", point: name });
    if (name === point) await forever();
  };
  const result = await idempotency.transaction(key, async (tx) => {
    await reach("before-effect");
    const { rows } = await tx.query(`INSERT INTO ${orders} (key, worker) VALUES ($1, $2) RETURNING id`, [
      key,
      String(process.pid),
    ]);
    await reach("after-effect");
    return { orderId: rows[0].id };
  });
  await reach("committed");
  await send({ type: "result", result });
  await pool.end();
} else if (mode === "race") {
  const [table, orders, workerId, keys] = args;
  const idempotency = createIdempotency({
    store: new PostgresStore({ pool, table }),
    scope: "global",
    waitMs: 20_000,
  });
  process.on("message", async () => {
    const outcomes = await Promise.all(
      Array.from({ length: Number(keys) }, async (_, i) => {
        const key = `race-${i}`;
        let ran = false;
        try {
          const result = await idempotency.transaction(key, async (tx) => {
            ran = true;
            await tx.query(`INSERT INTO ${orders} (key, worker) VALUES ($1, $2)`, [key, workerId]);
            // Hold the row lock a moment, so that duplicates really wait on it.
            await tx.query("SELECT pg_sleep(0.01)");
            return { key, worker: workerId };
          });
          return { key, ran, result };
        } catch (error) {
          return { key, ran, error: `${error.name}: ${error.message}` };
        }
      }),
    );
    await send({ type: "result", outcomes });
    await pool.end();
    process.disconnect();
  });
  await send({ type: "ready" });
} else {
  throw new Error(`unknown mode ${mode}`);
}
