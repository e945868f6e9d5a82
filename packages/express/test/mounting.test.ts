import { httpRequest } from "@idempotency/binding-tests";
import { IdempotencyOptionsError, type IdempotencyRequest, MemoryStore } from "@idempotency/core";
import express from "express";
import express4 from "express4";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency, notStarted } from "../src/index.js";
import { recordingOptions } from "./support.js";
import { type ExpressModule, listen } from "./table-app.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

describe.each([
  ["express 5", express],
  ["express 4", express4],
] as Array<[string, ExpressModule]>)("%s mounting", (_name, lib) => {
  async function start(app: ReturnType<ExpressModule>) {
    const running = await listen(app);
    closers.push(running.close);
    return running.url;
  }

  it("uses the full concrete path on a router with parameters mounted under a prefix", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    const router = lib.Router();
    router.post("/orders/:id/pay", idempotency(options), (req, res) => {
      res.status(201).json({ paid: req.params.id });
    });
    app.use("/api/v1", router);
    const url = await start(app);
    const res = await httpRequest(`${url}/api/v1/orders/42/pay?via=card`, { key: "k-pay" });
    expect(res.status).toBe(201);
    expect(res.json()).toEqual({ paid: "42" });
    expect(events[0]).toMatchObject({ type: "claimed", method: "POST", path: "/api/v1/orders/42/pay" });
    const other = await httpRequest(`${url}/api/v1/orders/43/pay?via=card`, { key: "k-pay" });
    expect(other.status).toBe(201);
    expect(other.headers["idempotent-replayed"]).toBeUndefined();
  });

  it("uses the full path in a sub-app mounted with app.use(prefix, subApp)", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    const shop = lib();
    shop.use(idempotency(options));
    shop.post("/orders", (_req, res) => {
      res.status(201).json({ ok: true });
    });
    app.use("/shop", shop);
    const url = await start(app);
    expect((await httpRequest(`${url}/shop/orders`, { key: "k-shop" })).status).toBe(201);
    expect((await httpRequest(`${url}/shop/orders`, { key: "k-shop" })).headers["idempotent-replayed"]).toBe(
      "true",
    );
    expect(events.map((event) => [event.type, event.path])).toEqual([
      ["claimed", "/shop/orders"],
      ["completed", "/shop/orders"],
      ["replayed", "/shop/orders"],
    ]);
  });

  it("decides once when mounted both app-wide and on the route", async () => {
    const { options, events } = recordingOptions();
    const guard = idempotency(options);
    const app = lib();
    app.use(guard);
    let runs = 0;
    app.post("/twice", guard, (_req, res) => {
      runs++;
      res.status(201).json({ runs });
    });
    const url = await start(app);
    const first = await httpRequest(`${url}/twice`, { key: "k-twice" });
    expect(first.status).toBe(201);
    const replay = await httpRequest(`${url}/twice`, { key: "k-twice" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
    expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
  });

  it("lets a later middleware protect what an earlier one passed through", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    app.use(idempotency({ ...options, methods: ["POST"] }));
    let runs = 0;
    app.put("/settings", idempotency({ ...options, methods: ["PUT"] }), (_req, res) => {
      runs++;
      res.json({ runs });
    });
    const url = await start(app);
    await httpRequest(`${url}/settings`, { method: "PUT", key: "k-put", json: "{}" });
    const replay = await httpRequest(`${url}/settings`, { method: "PUT", key: "k-put", json: "{}" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
    expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
  });

  it("hands the Express request to the scope function as request.native", async () => {
    let nativeSeen: unknown;
    const { options } = recordingOptions({
      scope: (request: IdempotencyRequest) => {
        nativeSeen = request.native;
        return (request.native as { get(name: string): string | undefined }).get("x-user") ?? "anonymous";
      },
    });
    const app = lib();
    let runs = 0;
    let handlerRequest: unknown;
    app.post("/mine", idempotency(options), (req, res) => {
      runs++;
      handlerRequest = req;
      res.status(201).end();
    });
    const url = await start(app);
    await httpRequest(`${url}/mine`, { key: "k-mine", headers: { "x-user": "ann" } });
    expect(nativeSeen).toBe(handlerRequest);
    await httpRequest(`${url}/mine`, { key: "k-mine", headers: { "x-user": "bob" } });
    await httpRequest(`${url}/mine`, { key: "k-mine", headers: { "x-user": "ann" } });
    expect(runs).toBe(2);
  });

  it("makes notStarted a no-op on requests it did not claim", async () => {
    const { options } = recordingOptions();
    const app = lib();
    app.post("/open", idempotency(options), (req, res) => {
      notStarted(req);
      res.status(403).json({ error: "forbidden" });
    });
    const url = await start(app);
    const res = await httpRequest(`${url}/open`);
    expect(res.status).toBe(403);
    expect(res.json()).toEqual({ error: "forbidden" });
  });

  it("validates options when the middleware is created", () => {
    expect(() => idempotency({ store: new MemoryStore(), scope: undefined as never })).toThrow(
      IdempotencyOptionsError,
    );
    try {
      idempotency({ store: new MemoryStore(), scope: "global", leaseMs: -5 });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyOptionsError);
      expect((error as IdempotencyOptionsError).option).toBe("leaseMs");
    }
  });

  it("passes an error thrown by the scope function to the app's error handlers", async () => {
    const { options } = recordingOptions({
      scope: () => {
        throw new Error("no tenant");
      },
    });
    const app = lib();
    let runs = 0;
    app.post("/scoped", idempotency(options), (_req, res) => {
      runs++;
      res.end();
    });
    app.use(
      (
        error: Error,
        _req: unknown,
        res: { status(code: number): { send(body: string): void } },
        _next: unknown,
      ) => {
        res.status(401).send(`refused: ${error.message}`);
      },
    );
    const url = await start(app);
    const res = await httpRequest(`${url}/scoped`, { key: "k-scope" });
    expect(res.status).toBe(401);
    expect(res.text()).toBe("refused: no tenant");
    expect(runs).toBe(0);
  });
});
