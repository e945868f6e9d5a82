import { serve } from "@hono/node-server";
import { RedisStore } from "@idempotency/redis";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createApp } from "../src/app.js";
import { startRedis } from "./redis.js";

let redis: Awaited<ReturnType<typeof startRedis>>;
let client: Redis;
let server: ReturnType<typeof serve>;
let base = "";
let orders: ReturnType<typeof createApp>["orders"];

beforeAll(async () => {
  redis = await startRedis();
  client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  const app = createApp(new RedisStore({ client, prefix: `example-${process.pid}:` }));
  orders = app.orders;
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => {
      base = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
});

afterAll(async () => {
  server?.close();
  client?.disconnect();
  redis?.stop();
});

const post = (key: string, body: string) =>
  fetch(`${base}/orders`, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body,
  });

it("runs the README's curl session: create, replay, conflict, invalid then corrected", async () => {
  const first = await post("order-1", '{"item":"apple","quantity":2}');
  expect(first.status).toBe(201);
  expect(first.headers.get("location")).toBe("/orders/1");
  const created = await first.text();
  expect(JSON.parse(created)).toEqual({ id: 1, item: "apple", quantity: 2 });

  const retry = await post("order-1", '{"item":"apple","quantity":2}');
  expect(retry.status).toBe(201);
  expect(retry.headers.get("idempotent-replayed")).toBe("true");
  expect(await retry.text()).toBe(created);

  expect((await post("order-1", '{"item":"pear"}')).status).toBe(422);

  expect((await post("order-2", '{"quantity":1}')).status).toBe(400);
  expect((await post("order-2", '{"item":"plum"}')).status).toBe(201);

  expect([...orders.values()].map((order) => order.item)).toEqual(["apple", "plum"]);
});
