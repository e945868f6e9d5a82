import { httpRequest, openRequest } from "@idempotency/binding-tests";
import { MemoryStore, PROBLEM_TYPES } from "@idempotency/core";
import express from "express";
import express4 from "express4";
import { afterEach, describe, expect, it, vi } from "vitest";
import { idempotency } from "../src/index.js";
import { recordingOptions, untilNoConnections } from "./support.js";
import { type ExpressModule, listen } from "./table-app.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const close of closers.splice(0)) await close();
});

class ValidationError extends Error {}

/** Thrown from an async Express 4 handler: Express 4 never sees it (vitest.config.ts lets it go unreported). */
class Express4AsyncThrow extends Error {
  override name = "Express4AsyncThrow";
}

describe.each([
  ["express 5", express],
  ["express 4", express4],
] as Array<[string, ExpressModule]>)("%s errors", (_name, lib) => {
  it("stores the status the app's error handler chose (a 4xx is stored and replayed)", async () => {
    const { options } = recordingOptions();
    const app = lib();
    let runs = 0;
    app.post("/validate", idempotency(options), (_req, _res, next) => {
      runs++;
      next(new ValidationError("item is required"));
    });
    app.use((error: Error, _req: unknown, res: express.Response, next: express.NextFunction) => {
      if (!(error instanceof ValidationError)) return next(error);
      res.status(422).json({ error: error.message });
    });
    const running = await listen(app);
    closers.push(running.close);
    const first = await httpRequest(`${running.url}/validate`, { key: "k-validate" });
    expect(first.status).toBe(422);
    expect(first.json()).toEqual({ error: "item is required" });
    const replay = await httpRequest(`${running.url}/validate`, { key: "k-validate" });
    expect(replay.status).toBe(422);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(first.body)).toBe(true);
    expect(runs).toBe(1);
  });

  it("stores what the client got when the error handler replaces a response begun but not yet sent", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    let runs = 0;
    app.post("/begun", idempotency(options), (req, res, next) => {
      runs++;
      res.status(201);
      if (req.query.declared === "1") {
        res.setHeader("content-length", "1");
        res.write("x"); // the whole declared body: held back until the record is completed
      } else {
        res.write(""); // an empty chunk: nothing went out yet
      }
      next(new Error("failed after starting the response"));
    });
    app.use((_error: Error, _req: unknown, res: express.Response, _next: express.NextFunction) => {
      res.removeHeader("content-length");
      res.status(500).type("text/plain").send("handled");
    });
    const running = await listen(app);
    closers.push(running.close);
    for (const path of ["/begun", "/begun?declared=1"]) {
      const first = await httpRequest(`${running.url}${path}`, { key: `k${path}` });
      expect([first.status, first.text()]).toEqual([500, "handled"]);
      const retry = await httpRequest(`${running.url}${path}`, { key: `k${path}` });
      expect([retry.status, retry.text()]).toEqual([500, "handled"]);
      expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    }
    expect(runs).toBe(4);
    expect(events.filter((event) => event.type === "completed")).toEqual([]);
  });

  it("releases the claim when Express's default error handler answers 500: a retry runs again", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    let runs = 0;
    app.post("/crash", idempotency(options), (_req, _res, next) => {
      runs++;
      next(new Error("database unreachable"));
    });
    const running = await listen(app);
    closers.push(running.close);
    const first = await httpRequest(`${running.url}/crash`, { key: "k-crash" });
    expect(first.status).toBe(500);
    const retry = await httpRequest(`${running.url}/crash`, { key: "k-crash" });
    expect(retry.status).toBe(500);
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    expect(runs).toBe(2);
    expect(events.filter((event) => event.type === "released").map((event) => event.status)).toEqual([
      500, 500,
    ]);
  });

  it("stores a 404 from a later middleware when no route matched (global use)", async () => {
    const { options } = recordingOptions();
    const app = lib();
    app.use(idempotency(options));
    const running = await listen(app);
    closers.push(running.close);
    const first = await httpRequest(`${running.url}/nowhere`, { key: "k-404" });
    expect(first.status).toBe(404);
    const replay = await httpRequest(`${running.url}/nowhere`, { key: "k-404" });
    expect(replay.status).toBe(404);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(first.body)).toBe(true);
  });
});

describe("express 4 async throw", () => {
  it("keeps the lease after the client leaves until maxExecutionMs (Express 4 never answers), then frees the key after leaseMs", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] }); // the lease renewal timer only
    let now = 1_700_000_000_000;
    const clock = () => now;
    const store = new MemoryStore({ now: clock });
    const leaseMs = 3_000;
    const maxExecutionMs = 4 * leaseMs;
    const { options, events } = recordingOptions({ store, now: clock, leaseMs, maxExecutionMs });
    /** Moves the engine's clock and its renewal timer together, one renewal interval at a time. */
    const step = async (intervals: number) => {
      for (let i = 0; i < intervals; i++) {
        now += leaseMs / 3;
        await vi.advanceTimersByTimeAsync(leaseMs / 3);
      }
    };
    const app = express4();
    let runs = 0;
    let entered: () => void = () => {};
    app.post("/charge", idempotency(options), async () => {
      runs++;
      entered();
      throw new Express4AsyncThrow("charge failed after the side effect"); // Express 4 never answers
    });
    const running = await listen(app);
    closers.push(running.close);
    const url = `${running.url}/charge`;

    const ran = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const hanging = openRequest(url, { key: "k-charge" });
    hanging.response.catch(() => {}); // destroyed below
    await ran;
    const key = events.find((event) => event.type === "claimed")?.key as string;

    // The client still waits: the lease is renewed every leaseMs / 3.
    await step(2);
    expect(await store.get(key)).toMatchObject({ state: "in-flight", leaseRemainingMs: leaseMs });
    const duplicate = await httpRequest(url, { key: "k-charge" });
    expect(duplicate.status).toBe(409);
    expect((duplicate.json() as { type: string }).type).toBe(PROBLEM_TYPES.inProgress);

    // The client gives up; the handler may still be running, so the lease is still renewed.
    hanging.destroy();
    await untilNoConnections(running.server);
    await step(6);
    expect(await store.get(key)).toMatchObject({ state: "in-flight", leaseRemainingMs: leaseMs });
    expect((await httpRequest(url, { key: "k-charge" })).status).toBe(409);

    // At maxExecutionMs renewal stops; the last renewed lease then runs out.
    await step(4);
    expect(events.at(-1)).toMatchObject({ type: "execution-limit", maxExecutionMs });
    expect(await store.get(key)).toMatchObject({ state: "in-flight", leaseRemainingMs: 2_000 });
    now += 1_999;
    expect((await httpRequest(url, { key: "k-charge" })).status).toBe(409);
    expect(runs).toBe(1);

    now += 1;
    const retry = openRequest(url, { key: "k-charge" });
    retry.response.catch(() => {});
    await vi.waitFor(() => expect(runs).toBe(2), { timeout: 10_000 });
    expect(
      events
        .filter((event) => event.type === "claimed")
        .map((event) => event.type === "claimed" && event.takeover),
    ).toEqual([false, true]);
    retry.destroy();
  });
});
