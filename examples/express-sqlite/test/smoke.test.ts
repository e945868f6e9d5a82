import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteStore } from "@idempotency/sqlite";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createApp } from "../src/app.js";

const dir = mkdtempSync(join(tmpdir(), "express-sqlite-"));
const store = new SqliteStore({ path: join(dir, "idempotency.db") });
const { app, orders } = createApp(store);
const server = app.listen(0, "127.0.0.1");
let base = "";

beforeAll(async () => {
  if (!server.listening) await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
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

it("runs the README's curl session: create, replay, conflict, missing key", async () => {
  const first = await post("order-1", '{"item":"apple","quantity":2}');
  expect(first.status).toBe(201);
  expect(first.headers.get("location")).toBe("/orders/1");
  const created = await first.text();
  expect(JSON.parse(created)).toEqual({ id: 1, tenant: "acme", item: "apple", quantity: 2 });

  const retry = await post("order-1", '{"quantity":2, "item":"apple"}'); // same JSON, other key order
  expect(retry.status).toBe(201);
  expect(retry.headers.get("idempotent-replayed")).toBe("true");
  expect(await retry.text()).toBe(created);

  const reused = await post("order-1", '{"item":"pear"}');
  expect(reused.status).toBe(422);
  expect(reused.headers.get("content-type")).toBe("application/problem+json");

  const missing = await post(null, '{"item":"apple"}');
  expect(missing.status).toBe(400);

  expect(orders.size).toBe(1);
});

it("scopes keys by the authenticated tenant, whatever tenant header the client sends", async () => {
  // globex sends acme's key and acme's order, and claims to be acme: it gets its own order, not acme's replay
  const other = await post("order-1", '{"item":"apple","quantity":2}', "globex-token", {
    "x-tenant-id": "acme",
  });
  expect(other.status).toBe(201);
  expect(other.headers.get("idempotent-replayed")).toBeNull();
  expect(await other.json()).toEqual({ id: 2, tenant: "globex", item: "apple", quantity: 2 });

  const peek = await fetch(`${base}/orders/1`, { headers: { authorization: "Bearer globex-token" } });
  expect(peek.status).toBe(404);
  expect(orders.size).toBe(2);
});

it("answers 401 before the guard: an unauthenticated request claims no key", async () => {
  const anonymous = await post("order-3", '{"item":"fig"}', null);
  expect(anonymous.status).toBe(401);
  expect(anonymous.headers.get("www-authenticate")).toBe("Bearer");
  expect((await post("order-3", '{"item":"fig"}', "not-a-token")).status).toBe(401);

  const authenticated = await post("order-3", '{"item":"fig"}');
  expect(authenticated.status).toBe(201);
  expect(authenticated.headers.get("idempotent-replayed")).toBeNull();
  expect(orders.size).toBe(3);
});
