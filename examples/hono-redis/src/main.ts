import { serve } from "@hono/node-server";
import { RedisStore } from "@idempotency/redis";
import { Redis } from "ioredis";
import { createApp } from "./app.js";

const url = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const port = Number(process.env.PORT ?? 3000);
// Fail a command quickly when Redis is unreachable: the request then gets 503 instead of hanging.
const client = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: 1_000 });
client.on("error", (error) => console.error(`redis: ${error.message}`));

const { app } = createApp(new RedisStore({ client, prefix: "orders-api:" }));
serve({ fetch: app.fetch, port }, () => {
  console.log(`orders API on http://localhost:${port} (idempotency records in ${url})`);
});
