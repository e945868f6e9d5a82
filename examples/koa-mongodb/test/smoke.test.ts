import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { MongoStore } from "@idempotency/mongodb";
import { MongoClient } from "mongodb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "../src/app.js";

// Builds the app over a MongoStore without any I/O: MongoClient connects on first use only.
it("builds the app over a MongoStore without connecting", async () => {
  const client = new MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100");
  const { app } = createApp(
    new MongoStore({ collection: client.db("app").collection("idempotency_records") }),
  );
  expect(typeof app.callback()).toBe("function");
  await client.close();
});

const url = process.env.MONGODB_URL;
if (!url) console.log("koa-mongodb smoke test NOT RUN: set MONGODB_URL=mongodb://127.0.0.1:27017 to run it");

describe.runIf(Boolean(url))("the orders API on MongoDB", () => {
  const client = new MongoClient(url ?? "mongodb://127.0.0.1:27017");
  const collection = client
    .db(process.env.MONGODB_DATABASE ?? "idempotency_test")
    .collection(`koa_example_${Date.now()}`);
  const w = process.env.MONGODB_WRITE_CONCERN;
  const store = new MongoStore({
    collection,
    ...(w ? { writeConcern: { w: /^\d+$/.test(w) ? Number(w) : w } } : {}),
  });
  const { app, orders } = createApp(store);
  const server = app.listen(0, "127.0.0.1");
  let base = "";

  beforeAll(async () => {
    await store.ensureIndexes();
    if (!server.listening) await once(server, "listening");
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.close();
    await collection.drop().catch(() => undefined);
    await client.close();
  });

  const post = (key: string | null, body: string, token: string | null = "acme-token", headers = {}) =>
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

  it("runs the README's curl session: create, replay, conflict, invalid body, other tenant", async () => {
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

    const invalid = await post("order-2", '{"quantity":2}');
    expect(invalid.status).toBe(400);
    const corrected = await post("order-2", '{"item":"plum"}'); // notStarted released the key
    expect(corrected.status).toBe(201);

    // globex may use the same key, and claiming to be acme in a header changes nothing: its own new order
    const otherTenant = await post("order-1", '{"item":"apple","quantity":2}', "globex-token", {
      "x-tenant-id": "acme",
    });
    expect(otherTenant.status).toBe(201);
    expect(otherTenant.headers.get("idempotent-replayed")).toBeNull();
    expect(await otherTenant.json()).toEqual({ id: 3, tenant: "globex", item: "apple", quantity: 2 });
    const peek = await fetch(`${base}/orders/1`, { headers: { authorization: "Bearer globex-token" } });
    expect(peek.status).toBe(404);

    expect([...orders.values()].map((order) => order.item)).toEqual(["apple", "plum", "apple"]);
  });

  it("answers 401 before the guard: an unauthenticated request claims no key", async () => {
    const anonymous = await post("order-4", '{"item":"fig"}', null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toBe("Bearer");
    expect((await post("order-4", '{"item":"fig"}', "not-a-token")).status).toBe(401);

    const authenticated = await post("order-4", '{"item":"fig"}');
    expect(authenticated.status).toBe(201);
    expect(authenticated.headers.get("idempotent-replayed")).toBeNull();
  });

  it("20 concurrent duplicates create one order; with waitMs every one gets the same response", async () => {
    const before = orders.size;
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => post("burst-1", '{"item":"melon"}')),
    );
    expect(orders.size).toBe(before + 1);
    const bodies = await Promise.all(responses.map((response) => response.text()));
    expect(responses.map((response) => response.status)).toEqual(Array(20).fill(201));
    expect(new Set(bodies).size).toBe(1);
  });
});
