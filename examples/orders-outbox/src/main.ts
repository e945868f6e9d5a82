/**
 * `pnpm start`: the API on http://127.0.0.1:3000, the outbox relay and two consumers in one process, against
 * DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test) and REDIS_URL (default redis://127.0.0.1:6379).
 *
 *   curl -X POST localhost:3000/orders -H 'authorization: Bearer acme-token' \
 *     -H 'idempotency-key: order-1' -H 'content-type: application/json' -d '{"item":"book","quantity":1}'
 */
import { createIdempotency } from "@idempotency/core";
import { PostgresStore } from "@idempotency/postgres";
import { Redis } from "ioredis";
import pg from "pg";
import { createApp } from "./app.js";
import { Consumer } from "./consumer.js";
import { relayOnce } from "./relay.js";
import { createSchema, tables } from "./schema.js";

const pool = new pg.Pool({
  connectionString: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test",
});
pool.on("error", (error) => console.error("idle PostgreSQL client failed", error));
const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", { maxRetriesPerRequest: 1 });
const names = tables("shop");
const stream = "shop:events";
await createSchema(pool, names);

const port = Number(process.env.PORT ?? 3000);
createApp({ pool, tables: names }).listen(port, "127.0.0.1", () =>
  console.log(`API on http://127.0.0.1:${port}`),
);

const idempotency = createIdempotency({
  store: new PostgresStore({ pool, table: names.records }),
  scope: "global",
});
const consumers = ["mailer-1", "mailer-2"].map(
  (name) => new Consumer({ redis, idempotency, pool, tables: names, stream, group: "mailers", name }),
);
await consumers[0]?.ensureGroup();

for (;;) {
  const published = await relayOnce({ pool, redis, tables: names, stream });
  if (published > 0) console.log(`relay: published ${published} outbox row(s) to ${stream}`);
  for (const consumer of consumers) {
    for (const delivery of [...(await consumer.reclaim(30_000)), ...(await consumer.poll(50, 100))]) {
      console.log(
        `${delivery.receipt.sentBy}: e-mail for outbox row ${delivery.outboxId} (entry ${delivery.entryId})`,
      );
    }
  }
}
