import { IdempotencyOptionsError, MemoryStore } from "@idempotency/core";
import { describe, expect, it } from "vitest";
import defaultExport, { idempotency } from "../src/index.js";
import { FASTIFY_VERSIONS, recording, serve } from "./support.js";
import { createApp } from "./table-app.js";

describe.each(FASTIFY_VERSIONS)("%s registration", (_name, lib) => {
  it("rejects the registration with IdempotencyOptionsError naming an invalid core option", async () => {
    const app = createApp(lib);
    const error = await app
      .register(idempotency, { store: new MemoryStore(), scope: "global", leaseMs: -1 })
      .then(
        () => undefined,
        (caught: unknown) => caught,
      );
    expect(error).toBeInstanceOf(IdempotencyOptionsError);
    expect(error).toMatchObject({ option: "leaseMs", code: "ERR_IDEMPOTENCY_OPTIONS" });
    await app.close();
  });

  it("rejects a missing store, an unknown option and an allRoutes that is not a boolean", async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ scope: "global" }, "store"],
      [{ store: new MemoryStore(), scope: "global", leasMs: 10 }, "leasMs"],
      [{ store: new MemoryStore(), scope: "global", allRoutes: "yes" }, "allRoutes"],
    ];
    for (const [options, option] of cases) {
      const app = createApp(lib);
      const error = await app.register(idempotency, options as never).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(IdempotencyOptionsError);
      expect((error as IdempotencyOptionsError).option).toBe(option);
      await app.close();
    }
  });

  it("throws when a route declares an invalid config.idempotency or an invalid override", async () => {
    const app = createApp(lib);
    await app.register(idempotency, { store: new MemoryStore(), scope: "global" });
    expect(() => app.post("/a", { config: { idempotency: "yes" as never } }, async () => "a")).toThrow(
      expect.objectContaining({ option: "config.idempotency" }),
    );
    expect(() => app.post("/b", { config: { idempotency: { leaseMs: 0 } } }, async () => "b")).toThrow(
      expect.objectContaining({ option: "leaseMs" }),
    );
    await app.close();
  });

  it("takes register's own options (prefix, logLevel) without passing them to the core", async () => {
    const { options, store } = recording();
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true, prefix: "/ignored", logLevel: "warn" });
      app.post("/orders", async () => ({ ok: true }));
    });
    expect((await send("/orders", { key: "k1" })).status).toBe(200);
    expect(store.calls.begin).toBe(1);
  });

  it("is a named fastify-plugin that is also the default export", async () => {
    expect(defaultExport).toBe(idempotency);
    const { app } = await serve(lib, async (app) => {
      await app.register(defaultExport, recording().options);
    });
    expect(app.hasPlugin("@idempotency/fastify")).toBe(true);
    expect(app.hasReplyDecorator("notStarted")).toBe(true);
  });
});
