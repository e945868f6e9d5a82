import { PROBLEM_TYPES } from "@idempotency/core";
import type { FastifyRequest } from "fastify";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { FASTIFY_VERSIONS, recording, serve } from "./support.js";

const ORDER = '{"item":"apple"}';

describe.each(FASTIFY_VERSIONS)("%s route opt-in", (_name, lib) => {
  it("protects only the routes that set config.idempotency by default", async () => {
    const { options, store } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, options);
      app.post("/guarded", { config: { idempotency: true } }, async () => ({ run: ++runs }));
      app.post("/open", async () => ({ run: ++runs }));
    });
    const first = await send("/guarded", { key: "k1" });
    const replay = await send("/guarded", { key: "k1" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.text()).toBe(first.text());
    const calls = store.totalCalls;
    expect((await send("/open", { key: "k1" })).text()).toBe('{"run":2}');
    expect((await send("/open", { key: "k1" })).text()).toBe('{"run":3}');
    expect(store.totalCalls).toBe(calls);
  });

  it("protects every route with allRoutes, except one that sets config.idempotency: false", async () => {
    const { options, store } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/guarded", async () => ({ run: ++runs }));
      app.post("/out", { config: { idempotency: false } }, async () => ({ run: ++runs }));
    });
    await send("/guarded", { key: "k1" });
    expect((await send("/guarded", { key: "k1" })).headers["idempotent-replayed"]).toBe("true");
    const calls = store.totalCalls;
    expect((await send("/out", { key: "k1" })).text()).toBe('{"run":2}');
    expect((await send("/out", { key: "k1" })).text()).toBe('{"run":3}');
    expect(store.totalCalls).toBe(calls);
  });

  it("applies a route's option overrides to that route only", async () => {
    const { options } = recording();
    const strict = { required: true };
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, options);
      app.post("/strict", { config: { idempotency: strict } }, async () => "strict");
      app.post("/lenient", { config: { idempotency: true } }, async () => "lenient");
      app.put("/put", { config: { idempotency: { methods: ["PUT"] } } }, async () => ({ at: Date.now() }));
    });
    const missing = await send("/strict");
    expect(missing.status).toBe(400);
    expect((missing.json() as { type: string }).type).toBe(PROBLEM_TYPES.missingKey);
    expect((await send("/lenient")).status).toBe(200);
    const put = await send("/put", { method: "PUT", key: "k-put" });
    const again = await send("/put", { method: "PUT", key: "k-put" });
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.text()).toBe(put.text());
  });

  it("protects the routes of the encapsulation context it is registered in, not its siblings", async () => {
    const { options, store } = recording();
    const { send } = await serve(lib, async (app) => {
      await app.register(async (guarded) => {
        await guarded.register(idempotency, { ...options, allRoutes: true });
        guarded.post("/inside", async () => "inside");
      });
      await app.register(async (sibling) => {
        sibling.post("/sibling", async () => "sibling");
      });
    });
    await send("/inside", { key: "k1" });
    expect((await send("/inside", { key: "k1" })).headers["idempotent-replayed"]).toBe("true");
    const calls = store.totalCalls;
    expect((await send("/sibling", { key: "k1" })).headers["idempotent-replayed"]).toBeUndefined();
    expect(store.totalCalls).toBe(calls);
  });

  it("runs a route protected by two registrations under one claim: the outer one decides", async () => {
    const outer = recording();
    const inner = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...outer.options, allRoutes: true });
      await app.register(async (child) => {
        await child.register(idempotency, { ...inner.options, allRoutes: true });
        child.post("/orders", async (_request, reply) => {
          reply.code(201);
          return { run: ++runs };
        });
      });
    });
    const first = await send("/orders", { key: "k1", json: ORDER });
    const replay = await send("/orders", { key: "k1", json: ORDER });
    expect([first.status, first.text()]).toEqual([201, '{"run":1}']);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
    expect(outer.events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
    expect(inner.store.totalCalls).toBe(0);
  });

  it("claims after authentication hooks, so the scope function sees request.user (native is the FastifyRequest)", async () => {
    const { options } = recording({
      scope: (request) => (request.native as FastifyRequest & { user: string }).user,
    });
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.decorateRequest("user", "");
      await app.register(idempotency, options);
      app.post(
        "/orders",
        {
          config: { idempotency: true },
          // A route-level preHandler, the way @fastify/auth is wired: it runs before the plugin's.
          preHandler: async (request) => {
            (request as FastifyRequest & { user: string }).user = String(request.headers["x-user"]);
          },
        },
        async (request) => ({ run: ++runs, user: (request as FastifyRequest & { user: string }).user }),
      );
    });
    const alice = await send("/orders", { key: "k-shared", headers: { "x-user": "alice" } });
    const bob = await send("/orders", { key: "k-shared", headers: { "x-user": "bob" } });
    const aliceAgain = await send("/orders", { key: "k-shared", headers: { "x-user": "alice" } });
    expect(alice.text()).toBe('{"run":1,"user":"alice"}');
    expect(bob.text()).toBe('{"run":2,"user":"bob"}');
    expect(aliceAgain.text()).toBe(alice.text());
    expect(aliceAgain.headers["idempotent-replayed"]).toBe("true");
  });

  it("keys records by the path as Fastify routed it, not normalised", async () => {
    const { options, events } = recording();
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/items/:name", async (request) => ({ name: (request.params as { name: string }).name }));
    });
    await send("/items/a%20b?x=1", { key: "k1" });
    expect(events.find((event) => event.type === "claimed")?.path).toBe("/items/a%20b");
  });

  it("does not claim a request that fails schema validation: a corrected retry with the same key runs", async () => {
    const { options, events } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, options);
      app.post(
        "/orders",
        {
          config: { idempotency: true },
          schema: {
            body: {
              type: "object",
              required: ["item"],
              properties: { item: { type: "string" } },
            },
          },
        },
        async (_request, reply) => {
          reply.code(201);
          return { run: ++runs };
        },
      );
    });
    const invalid = await send("/orders", { key: "k1", json: "{}" });
    expect(invalid.status).toBe(400);
    expect(events).toEqual([]);
    const valid = await send("/orders", { key: "k1", json: ORDER });
    expect([valid.status, valid.text()]).toEqual([201, '{"run":1}']);
  });
});
