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

const post = (
  key: string | null,
  body: string,
  token: string | null = "acme-token",
  headers: Record<string, string> = {},
) =>
  fetch(`${base}/orders`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(key ? { "idempotency-key": key } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body,
  });

it("runs the README's curl session: create, replay, conflict, invalid then corrected", async () => {
  const first = await post("order-1", '{"item":"apple","quantity":2}');
  expect(first.status).toBe(201);
  expect(first.headers.get("location")).toBe("/orders/1");
  const created = await first.text();
  expect(JSON.parse(created)).toEqual({ id: 1, tenant: "acme", item: "apple", quantity: 2 });

  const retry = await post("order-1", '{"item":"apple","quantity":2}');
  expect(retry.status).toBe(201);
  expect(retry.headers.get("idempotent-replayed")).toBe("true");
  expect(await retry.text()).toBe(created);

  expect((await post("order-1", '{"item":"pear"}')).status).toBe(422);

  expect((await post("order-2", '{"quantity":1}')).status).toBe(400);
  expect((await post("order-2", '{"item":"plum"}')).status).toBe(201);

  expect([...orders.values()].map((order) => order.item)).toEqual(["apple", "plum"]);
});

it("scopes keys by the authenticated tenant, whatever tenant header the client sends", async () => {
  // globex sends acme's key and acme's order, and claims to be acme: it gets its own order, not acme's replay
  const other = await post("order-1", '{"item":"apple","quantity":2}', "globex-token", {
    "x-tenant-id": "acme",
  });
  expect(other.status).toBe(201);
  expect(other.headers.get("idempotent-replayed")).toBeNull();
  expect(await other.json()).toEqual({ id: 3, tenant: "globex", item: "apple", quantity: 2 });

  const peek = await fetch(`${base}/orders/1`, { headers: { authorization: "Bearer globex-token" } });
  expect(peek.status).toBe(404);
});

it("answers 401 before the guard: an unauthenticated request claims no key", async () => {
  const anonymous = await post("order-4", '{"item":"fig"}', null);
  expect(anonymous.status).toBe(401);
  expect(anonymous.headers.get("www-authenticate")).toBe("Bearer");
  expect((await post("order-4", '{"item":"fig"}', "not-a-token")).status).toBe(401);

  const authenticated = await post("order-4", '{"item":"fig"}');
  expect(authenticated.status).toBe(201);
  expect(authenticated.headers.get("idempotent-replayed")).toBeNull();
  expect([...orders.values()].map((order) => order.item)).toEqual(["apple", "plum", "apple", "fig"]);
});
