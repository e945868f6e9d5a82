// A child process for the transaction tests: plain JavaScript importing the BUILT packages by name. Points
// are announced on stdout, which is synchronous for a pipe on Linux, so the parent sees each line before the
// child blocks; the parent counts effects in the database file afterwards.
//
//   node transaction-worker.mjs crash <point> <file> <key>
//     runs one idempotency.transaction() whose effect inserts an order, printing each point it passes
//     ("before-effect", "after-effect" inside the transaction, "committed" after it returned); at <point> it
//     blocks (the event loop too) until killed.
//   node transaction-worker.mjs race <file> <workerId> <keys>
//     prints "ready", and on a line "go" on stdin runs transaction() for keys race-0 … race-<keys - 1>, all
//     started at once, each inserting one order, duplicates waiting up to 20 s; prints the outcomes as JSON.
import { createIdempotency } from "@idempotency/core";
import { SqliteStore } from "@idempotency/sqlite";
import Database from "better-sqlite3";

const [mode, ...args] = process.argv.slice(2);
const block = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);

if (mode === "crash") {
  const [point, file, key] = args;
  const db = new Database(file);
  const idempotency = createIdempotency({ store: new SqliteStore({ database: db }), scope: "global" });
  const reach = (name) => {
    process.stdout.write(`point ${name}\n`);
    if (name === point) block();
  };
  const result = await idempotency.transaction(key, (tx) => {
    reach("before-effect");
    const { lastInsertRowid } = tx
      .prepare("INSERT INTO orders (key, worker) VALUES (?, ?)")
      .run(key, String(process.pid));
    reach("after-effect");
    return { orderId: Number(lastInsertRowid) };
  });
  reach("committed");
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
} else if (mode === "race") {
  const [file, workerId, keys] = args;
  const db = new Database(file);
  const idempotency = createIdempotency({
    store: new SqliteStore({ database: db }),
    scope: "global",
    waitMs: 20_000,
  });
  const insert = db.prepare("INSERT INTO orders (key, worker) VALUES (?, ?)");
  process.stdin.once("data", async () => {
    const outcomes = await Promise.all(
      Array.from({ length: Number(keys) }, async (_, i) => {
        const key = `race-${i}`;
        let ran = false;
        try {
          const result = await idempotency.transaction(key, () => {
            ran = true;
            insert.run(key, workerId);
            return { key, worker: workerId };
          });
          return { key, ran, result };
        } catch (error) {
          return { key, ran, error: `${error.name}: ${error.message}` };
        }
      }),
    );
    process.stdout.write(`result ${JSON.stringify(outcomes)}\n`);
    db.close();
    process.exit(0);
  });
  process.stdout.write("ready\n");
} else {
  throw new Error(`unknown mode ${mode}`);
}
