import { readdirSync, readFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import {
  IdempotencyBodyConsumedError,
  type IdempotencyOptions,
  IdempotencyOptionsError,
  MemoryStore,
} from "@idempotency/core";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { compress } from "hono/compress";
import { HTTPException } from "hono/http-exception";
import { stream, streamText } from "hono/streaming";
import { afterEach, describe, expect, it, vi } from "vitest";
import { idempotency, notStarted } from "../src/index.js";
import { deferred, EventLog, GatedCompleteStore, type RunningServer, send, start } from "./support.js";

const servers: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function serveApp(app: Hono): Promise<RunningServer> {
  const server = await start(app);
  servers.push(server);
  return server;
}

function options(log?: EventLog, extra: Partial<IdempotencyOptions> = {}): IdempotencyOptions {
  return { store: new MemoryStore(), scope: "global", ...(log ? { onEvent: log.onEvent } : {}), ...extra };
}

describe("request body", () => {
  it("leaves the body readable by c.req.json(), c.req.text() and c.req.raw after fingerprinting", async () => {
    const app = new Hono();
    const seen: unknown[] = [];
    app.use(idempotency(options()));
    app.post("/json", async (c) => {
      seen.push(await c.req.json());
      return c.json({ ok: true }, 201);
    });
    app.post("/text", async (c) => {
      seen.push(await c.req.text());
      return c.text("ok");
    });
    app.post("/raw", async (c) => {
      seen.push(await c.req.raw.json());
      return c.text("ok");
    });
    const server = await serveApp(app);

    expect((await send(server, { path: "/json", key: "k1", json: { item: "book" } })).status).toBe(201);
    expect((await send(server, { path: "/text", key: "k2", body: "plain words" })).status).toBe(200);
    expect((await send(server, { path: "/raw", key: "k3", json: { via: "raw" } })).status).toBe(200);
    expect(seen).toEqual([{ item: "book" }, "plain words", { via: "raw" }]);
  });

  it("fingerprints a body an earlier middleware already read through c.req", async () => {
    const app = new Hono();
    let executions = 0;
    app.use(async (c, next) => {
      if (c.req.method === "POST") await c.req.json(); // e.g. a validator
      await next();
    });
    app.use(idempotency(options()));
    app.post("/orders", async (c) => {
      executions++;
      return c.json({ item: (await c.req.json()).item }, 201);
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/orders", key: "k", json: { item: "a", n: 1 } });
    const replay = await send(server, { path: "/orders", key: "k", json: { n: 1, item: "a" } });
    const other = await send(server, { path: "/orders", key: "k", json: { item: "b", n: 1 } });

    expect(first.status).toBe(201);
    expect(first.json()).toEqual({ item: "a" });
    expect(replay.status).toBe(201);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(first.body)).toBe(true);
    expect(other.status).toBe(422);
    expect(executions).toBe(1);
  });

  it("fingerprints the request hono's bodyLimit() re-creates, and lets it answer 413 first", async () => {
    const app = new Hono();
    const store = new MemoryStore();
    let executions = 0;
    app.use(bodyLimit({ maxSize: 64 }));
    app.use(idempotency({ store, scope: "global" }));
    app.post("/orders", async (c) => {
      executions++;
      return c.json({ item: (await c.req.json()).item }, 201);
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/orders", key: "k", json: { item: "a" }, chunked: true });
    const reordered = await send(server, {
      path: "/orders",
      key: "k",
      body: '{ "item" : "a" }',
      headers: [["content-type", "application/json"]],
      chunked: true,
    });
    const other = await send(server, { path: "/orders", key: "k", json: { item: "b" }, chunked: true });
    const tooLarge = await send(server, {
      path: "/orders",
      key: "k2",
      json: { item: "x".repeat(100) },
      chunked: true,
    });
    expect([first.status, first.json()]).toEqual([201, { item: "a" }]);
    expect([reordered.status, reordered.headers["idempotent-replayed"]]).toEqual([201, "true"]);
    expect(other.status).toBe(422);
    expect(tooLarge.status).toBe(413);
    expect(executions).toBe(1);
  });

  it("reports a body consumed through c.req.raw before the middleware with an actionable error", async () => {
    const app = new Hono();
    const errors: Error[] = [];
    app.onError((error, c) => {
      errors.push(error);
      return c.text("handled", 500);
    });
    app.use(async (c, next) => {
      await c.req.raw.text();
      await next();
    });
    app.use(idempotency(options()));
    app.post("/orders", (c) => c.text("never"));
    const server = await serveApp(app);

    const response = await send(server, { path: "/orders", key: "k", body: "x" });
    expect(response.status).toBe(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(IdempotencyBodyConsumedError);
    expect(errors[0]).toMatchObject({ code: "ERR_IDEMPOTENCY_BODY_CONSUMED" });
    expect(errors[0]?.message).toContain("mount idempotency() before that middleware");
  });
});

describe("path and mounting", () => {
  it("uses the full concrete path inside a sub-app mounted with app.route()", async () => {
    const log = new EventLog();
    const store = new MemoryStore();
    const counts = { api: 0, root: 0 };
    const api = new Hono();
    api.use(idempotency(options(log, { store })));
    api.post("/orders", (c) => {
      counts.api++;
      return c.json({ from: "api" }, 201);
    });
    const app = new Hono();
    app.route("/api", api);
    app.post("/orders", idempotency(options(log, { store })), (c) => {
      counts.root++;
      return c.json({ from: "root" }, 201);
    });
    const server = await serveApp(app);

    const underApi = await send(server, { path: "/api/orders", key: "same" });
    const atRoot = await send(server, { path: "/orders", key: "same" });
    const replay = await send(server, { path: "/api/orders", key: "same" });

    expect(underApi.json()).toEqual({ from: "api" });
    expect(atRoot.json()).toEqual({ from: "root" });
    expect(replay.json()).toEqual({ from: "api" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(counts).toEqual({ api: 1, root: 1 });
    const claimed = log.events.filter((event) => event.type === "claimed").map((event) => event.path);
    expect(claimed).toEqual(["/api/orders", "/orders"]);
  });

  it("uses the full path under app.basePath() and a path-scoped app.use()", async () => {
    const log = new EventLog();
    const app = new Hono().basePath("/v1");
    app.use("/shop/*", idempotency(options(log)));
    app.post("/shop/carts/:id", (c) => c.json({ id: c.req.param("id") }, 201));
    const server = await serveApp(app);

    const response = await send(server, { path: "/v1/shop/carts/7?ref=mail", key: "k" });
    expect(response.status).toBe(201);
    expect(response.json()).toEqual({ id: "7" });
    expect(log.events.find((event) => event.type === "claimed")?.path).toBe("/v1/shop/carts/7");
  });

  it("keeps the path percent-encoded, as Express and Koa do", async () => {
    const log = new EventLog();
    const app = new Hono();
    app.use(idempotency(options(log)));
    app.post("/items/:name", (c) => c.json({ name: c.req.param("name") }, 201));
    const server = await serveApp(app);

    const response = await send(server, { path: "/items/a%20b", key: "k" });
    expect(response.json()).toEqual({ name: "a b" });
    expect(log.events.find((event) => event.type === "claimed")?.path).toBe("/items/a%20b");
  });

  it("passes GET and requests without a key straight through", async () => {
    const log = new EventLog();
    const app = new Hono();
    let executions = 0;
    app.use(idempotency(options(log)));
    app.on(["GET", "POST"], "/orders", (c) => {
      executions++;
      return c.text(`run ${executions}`);
    });
    const server = await serveApp(app);

    expect((await send(server, { method: "GET", path: "/orders", key: "k" })).text()).toBe("run 1");
    expect((await send(server, { method: "GET", path: "/orders", key: "k" })).text()).toBe("run 2");
    expect((await send(server, { path: "/orders" })).text()).toBe("run 3");
    expect(log.events).toEqual([]);
  });
});

describe("errors and final status", () => {
  it("stores nothing when app.onError turns a thrown error into a 500, and a retry runs again", async () => {
    const log = new EventLog();
    const app = new Hono();
    let executions = 0;
    app.onError((error, c) => c.text(`handled: ${error.message}`, 500));
    app.post("/throw", idempotency(options(log)), () => {
      executions++;
      throw new Error("boom");
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/throw", key: "k" });
    const retry = await send(server, { path: "/throw", key: "k" });
    expect([first.status, first.text()]).toEqual([500, "handled: boom"]);
    expect([retry.status, retry.text()]).toEqual([500, "handled: boom"]);
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    expect(executions).toBe(2);
    expect(log.types()).toEqual(["claimed", "released", "claimed", "released"]);
  });

  it("stores the 4xx an error handler produced, and replays it", async () => {
    const app = new Hono();
    let executions = 0;
    app.post("/orders", idempotency(options()), () => {
      executions++;
      throw new HTTPException(403, { message: "forbidden here" });
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/orders", key: "k" });
    const retry = await send(server, { path: "/orders", key: "k" });
    expect([first.status, first.text()]).toEqual([403, "forbidden here"]);
    expect([retry.status, retry.text()]).toEqual([403, "forbidden here"]);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(executions).toBe(1);
  });

  it("follows a sub-app's own onError", async () => {
    const app = new Hono();
    const api = new Hono();
    let executions = 0;
    api.onError((error, c) => c.json({ error: error.message }, 400));
    api.post("/orders", () => {
      executions++;
      throw new Error("bad order");
    });
    app.use(idempotency(options()));
    app.route("/api", api);
    const server = await serveApp(app);

    const first = await send(server, { path: "/api/orders", key: "k" });
    const retry = await send(server, { path: "/api/orders", key: "k" });
    expect([first.status, first.json()]).toEqual([400, { error: "bad order" }]);
    expect([retry.status, retry.json()]).toEqual([400, { error: "bad order" }]);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(executions).toBe(1);
  });

  it("releases the claim when something other than an Error is thrown past onError", async () => {
    const log = new EventLog();
    const app = new Hono();
    let executions = 0;
    app.post("/orders", idempotency(options(log)), () => {
      executions++;
      throw "not an Error object";
    });
    const fetch = app.fetch;
    // What the runtime does with an unhandled rejection from fetch: here, answer 500.
    const wrapper = new Hono();
    wrapper.all("*", async (c) => {
      try {
        return await fetch(c.req.raw);
      } catch {
        return c.text("unhandled", 500);
      }
    });
    const server = await serveApp(wrapper);

    expect((await send(server, { path: "/orders", key: "k" })).status).toBe(500);
    expect((await send(server, { path: "/orders", key: "k" })).status).toBe(500);
    expect(executions).toBe(2);
    expect(log.events.filter((event) => event.type === "released")).toMatchObject([
      { reason: "no-response" },
      { reason: "no-response" },
    ]);
  });

  it("releases the claim when a later middleware used up the response body", async () => {
    const log = new EventLog();
    const app = new Hono();
    app.onError((error, c) => c.text(`handled: ${error.name}`, 500));
    app.use(idempotency(options(log)));
    app.use(async (c, next) => {
      await next();
      await c.res.text(); // reads the body and forgets to put a response back
    });
    app.post("/orders", (c) => c.text("created", 201));
    const server = await serveApp(app);

    const response = await send(server, { path: "/orders", key: "k" });
    expect([response.status, response.text()]).toEqual([500, "handled: TypeError"]);
    expect(log.events.find((event) => event.type === "released")).toMatchObject({ reason: "no-response" });
  });

  it("releases the claim when the handler returns no response", async () => {
    const log = new EventLog();
    const app = new Hono();
    app.onError((_error, c) => c.text("no response", 500));
    // A handler that forgets to return its response.
    app.post("/orders", idempotency(options(log)), (() => {}) as never);
    const server = await serveApp(app);

    expect((await send(server, { path: "/orders", key: "k" })).status).toBe(500);
    expect(log.events.find((event) => event.type === "released")).toMatchObject({ reason: "no-response" });
  });
});

describe("response capture", () => {
  it("captures hono/streaming's stream() and replays it byte for byte", async () => {
    const app = new Hono();
    let executions = 0;
    app.post("/stream", idempotency(options()), (c) => {
      executions++;
      c.header("content-type", "application/octet-stream");
      return stream(c, async (s) => {
        for (let i = 0; i < 4; i++) await s.write(new Uint8Array([i, 255 - i, executions]));
      });
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/stream", key: "k" });
    const replay = await send(server, { path: "/stream", key: "k" });
    expect([...first.body]).toEqual([0, 255, 1, 1, 254, 1, 2, 253, 1, 3, 252, 1]);
    expect(replay.body.equals(first.body)).toBe(true);
    expect(replay.headers["content-type"]).toBe("application/octet-stream");
    expect(replay.headers["content-length"]).toBe("12");
    expect(executions).toBe(1);
  });

  it("streams a body whose chunks arrive later, one by one, and replays it whole", async () => {
    const app = new Hono();
    let executions = 0;
    app.post("/late", idempotency(options()), (c) => {
      executions++;
      return streamText(c, async (s) => {
        for (const word of ["late", " and", " later"]) {
          await s.sleep(20);
          await s.write(word);
        }
      });
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/late", key: "k" });
    const replay = await send(server, { path: "/late", key: "k" });
    expect([first.status, first.text(), first.headers["transfer-encoding"]]).toEqual([
      200,
      "late and later",
      "chunked",
    ]);
    expect([replay.text(), replay.headers["content-length"], replay.headers["idempotent-replayed"]]).toEqual([
      "late and later",
      "14",
      "true",
    ]);
    expect(replay.headers["content-type"]).toBe(first.headers["content-type"]);
    expect(executions).toBe(1);
  });

  it("accepts string chunks from a ReadableStream body", async () => {
    const app = new Hono();
    app.post("/words", idempotency(options()), () => {
      const body = new ReadableStream<string>({
        start(controller) {
          controller.enqueue("héllo ");
          controller.enqueue("wörld");
          controller.close();
        },
      });
      return new Response(body as unknown as ReadableStream<Uint8Array>, {
        headers: { "content-type": "text/plain; charset=utf-8" },
      });
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/words", key: "k" });
    const replay = await send(server, { path: "/words", key: "k" });
    expect(first.text()).toBe("héllo wörld");
    expect(replay.text()).toBe("héllo wörld");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
  });

  it("stores headers a later middleware adds, and applies headers an outer middleware prepared to replays", async () => {
    const app = new Hono();
    app.use(async (c, next) => {
      c.header("x-outer", "prepared");
      await next();
    });
    app.use(idempotency(options()));
    app.use(async (c, next) => {
      await next();
      c.res.headers.set("x-inner", "after");
    });
    app.post("/orders", (c) => c.json({ id: 1 }, 201));
    const server = await serveApp(app);

    const first = await send(server, { path: "/orders", key: "k" });
    const replay = await send(server, { path: "/orders", key: "k" });
    const conflict = await send(server, { path: "/orders", key: "k", body: "other" });
    for (const response of [first, replay]) {
      expect(response.status).toBe(201);
      expect(response.headers["x-inner"]).toBe("after");
      expect(response.headers["x-outer"]).toBe("prepared");
    }
    expect(conflict.status).toBe(422);
    expect(conflict.headers["x-outer"]).toBe("prepared");
  });

  it("stores the plain response under an outer compress(), which encodes first responses and replays alike", async () => {
    const app = new Hono();
    const store = new MemoryStore();
    const log = new EventLog();
    let executions = 0;
    app.use(compress());
    app.use(idempotency({ store, scope: "global", onEvent: log.onEvent }));
    app.post("/report", (c) => {
      executions++;
      return c.text("row;".repeat(2000));
    });
    const server = await serveApp(app);

    const gzip: Array<[string, string]> = [["accept-encoding", "gzip"]];
    const first = await send(server, { path: "/report", key: "k", headers: gzip });
    const replay = await send(server, { path: "/report", key: "k", headers: gzip });
    const plainReplay = await send(server, { path: "/report", key: "k" });
    expect(first.headers["content-encoding"]).toBe("gzip");
    expect(replay.headers["content-encoding"]).toBe("gzip");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(gunzipSync(first.body).toString()).toBe("row;".repeat(2000));
    expect(gunzipSync(replay.body).toString()).toBe("row;".repeat(2000));
    expect(plainReplay.headers["content-encoding"]).toBeUndefined();
    expect(plainReplay.text()).toBe("row;".repeat(2000));
    expect(log.events.find((event) => event.type === "completed")).toMatchObject({ bodyBytes: 8000 });
    expect(executions).toBe(1);
  });

  it("releases the claim when the handler's body stream fails", async () => {
    const log = new EventLog();
    const app = new Hono();
    let executions = 0;
    app.post("/broken", idempotency(options(log)), () => {
      executions++;
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (!sent) {
            sent = true;
            controller.enqueue(new TextEncoder().encode("partial"));
          } else controller.error(new Error("disk gone"));
        },
      });
      return new Response(body, { headers: { "content-type": "text/plain" } });
    });
    const server = await serveApp(app);

    for (let attempt = 1; attempt <= 2; attempt++) {
      const released = log.next("released");
      // The client sees a cut-off response (how depends on the server); the claim must be released.
      await send(server, { path: "/broken", key: "k" }).catch(() => undefined);
      expect(await released).toMatchObject({ reason: "no-response" });
    }
    expect(executions).toBe(2);
  });

  for (const framing of ["content-length", "chunked"] as const) {
    it(`holds back the end of the response (${framing}) until the record is completed`, async () => {
      const store = new GatedCompleteStore();
      const app = new Hono();
      let executions = 0;
      app.post("/orders", idempotency({ store, scope: "global" }), () => {
        executions++;
        const bytes = new TextEncoder().encode("0123456789");
        if (framing === "content-length") {
          return new Response(bytes, { status: 201, headers: { "content-length": "10" } });
        }
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            controller.enqueue(bytes.subarray(0, 5));
            controller.enqueue(bytes.subarray(5));
            controller.close();
          },
        });
        return new Response(body, { status: 201 });
      });
      const server = await serveApp(app);

      let received = "";
      let ended = false;
      const done = deferred();
      const req = httpRequest(
        {
          host: "127.0.0.1",
          port: server.port,
          method: "POST",
          path: "/orders",
          headers: { "idempotency-key": "k" },
        },
        (res) => {
          if (framing === "content-length") expect(res.headers["content-length"]).toBe("10");
          else expect(res.headers["transfer-encoding"]).toBe("chunked");
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            received += chunk;
          });
          res.on("end", () => {
            ended = true;
            done.resolve();
          });
        },
      );
      req.end();

      await store.completeCalled.promise;
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(ended).toBe(false);
      // A complete body goes out once the record is completed; a stream flows, and only its end waits.
      expect(received).toBe(framing === "content-length" ? "" : "0123456789");
      store.gate.resolve();
      await done.promise;
      expect(received).toBe("0123456789");

      const retry = await send(server, { path: "/orders", key: "k" });
      expect([retry.status, retry.text(), retry.headers["idempotent-replayed"]]).toEqual([
        201,
        "0123456789",
        "true",
      ]);
      expect(executions).toBe(1);
    });
  }
});

describe("client disconnect", () => {
  it("stores the result of a handler whose client left before the response, and replays it", async () => {
    const log = new EventLog();
    const app = new Hono();
    const gate = deferred();
    const aborted = deferred();
    let executions = 0;
    app.post("/slow", idempotency(options(log)), async (c) => {
      executions++;
      c.req.raw.signal.addEventListener("abort", () => aborted.resolve());
      await gate.promise;
      return c.json({ done: true }, 201);
    });
    const server = await serveApp(app);

    const req = httpRequest({
      host: "127.0.0.1",
      port: server.port,
      method: "POST",
      path: "/slow",
      headers: { "idempotency-key": "k", "content-length": "0" },
    });
    req.on("error", () => {});
    req.end();
    await log.next("claimed");
    req.destroy();
    await aborted.promise;
    const completed = log.next("completed");
    gate.resolve();
    await completed;

    const retry = await send(server, { path: "/slow", key: "k" });
    expect([retry.status, retry.json(), retry.headers["idempotent-replayed"]]).toEqual([
      201,
      { done: true },
      "true",
    ]);
    expect(executions).toBe(1);
  });

  it("drains and stores a streamed body whose client left mid-stream", async () => {
    const log = new EventLog();
    const app = new Hono();
    const gate = deferred();
    let executions = 0;
    app.post("/stream", idempotency(options(log)), () => {
      executions++;
      let step = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          step++;
          if (step === 1) controller.enqueue(new TextEncoder().encode("first;"));
          else if (step === 2) {
            await gate.promise;
            controller.enqueue(new TextEncoder().encode("second;"));
          } else if (step === 3) controller.enqueue(new TextEncoder().encode("third"));
          else controller.close();
        },
      });
      return new Response(body, { status: 200, headers: { "content-type": "text/plain" } });
    });
    const server = await serveApp(app);

    const firstChunk = deferred<string>();
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port: server.port,
        method: "POST",
        path: "/stream",
        headers: { "idempotency-key": "k", "content-length": "0" },
      },
      (res) => {
        res.setEncoding("utf8");
        res.once("data", (chunk: string) => firstChunk.resolve(chunk));
        res.on("error", () => {});
      },
    );
    req.on("error", () => {});
    req.end();
    expect(await firstChunk.promise).toBe("first;");
    req.destroy();
    const completed = log.next("completed");
    gate.resolve();
    expect(await completed).toMatchObject({ status: 200, bodyBytes: 18 });

    const retry = await send(server, { path: "/stream", key: "k" });
    expect([retry.status, retry.text(), retry.headers["idempotent-replayed"]]).toEqual([
      200,
      "first;second;third",
      "true",
    ]);
    expect(executions).toBe(1);
  });
});

describe("leases", () => {
  it("renews the lease while the handler runs, also after the client left, until maxExecutionMs; fences the late result", async () => {
    let clock = 1_000_000;
    const now = () => clock;
    const log = new EventLog();
    const app = new Hono();
    const gate = deferred();
    const aborted = deferred();
    let executions = 0;
    app.post(
      "/hang",
      idempotency({
        store: new MemoryStore({ now }),
        scope: "global",
        now,
        leaseMs: 30_000,
        maxExecutionMs: 120_000,
        onEvent: log.onEvent,
      }),
      async (c) => {
        const run = ++executions;
        if (run === 1) c.req.raw.signal.addEventListener("abort", () => aborted.resolve());
        await gate.promise;
        return c.json({ run }, 201);
      },
    );
    const server = await serveApp(app);
    // Only the engine's renewal interval is faked; the server and the clients run on real time.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      const elapse = async (ms: number) => {
        for (let step = 0; step < ms; step += 10_000) {
          clock += 10_000;
          await vi.advanceTimersByTimeAsync(10_000);
        }
      };
      const first = httpRequest({
        host: "127.0.0.1",
        port: server.port,
        method: "POST",
        path: "/hang",
        headers: { "idempotency-key": "k", "content-length": "0" },
      });
      first.on("error", () => {});
      first.end();
      await log.next("claimed");

      await elapse(40_000); // past the first lease: only renewals keep it
      const duplicate = await send(server, { path: "/hang", key: "k" });
      expect(duplicate.status).toBe(409);
      expect(duplicate.headers["retry-after"]).toBe("1");

      first.destroy();
      await aborted.promise;
      await elapse(40_000); // the client left, the handler runs on: still renewed
      expect((await send(server, { path: "/hang", key: "k" })).status).toBe(409);
      await elapse(40_000); // the tick at 120 s finds maxExecutionMs reached
      expect(log.events.find((event) => event.type === "execution-limit")).toMatchObject({
        maxExecutionMs: 120_000,
        elapsedMs: 120_000,
      });
      expect((await send(server, { path: "/hang", key: "k" })).status).toBe(409);
      await elapse(30_000); // the lease renewed last, at 110 s, has run out
      const retry = send(server, { path: "/hang", key: "k" });
      expect(await log.next("claimed")).toMatchObject({ takeover: true });

      const leaseLost = log.next("lease-lost");
      gate.resolve();
      expect(await leaseLost).toMatchObject({ operation: "complete" });
      expect((await retry).json()).toEqual({ run: 2 });
      const replay = await send(server, { path: "/hang", key: "k" });
      expect([replay.json(), replay.headers["idempotent-replayed"]]).toEqual([{ run: 2 }, "true"]);
      expect(executions).toBe(2);
    } finally {
      vi.useRealTimers();
      gate.resolve();
    }
  });
});

describe("core options through the binding", () => {
  it("answers a retry of a response too large to store with 410 and its Location", async () => {
    const app = new Hono();
    let executions = 0;
    app.post("/reports", idempotency(options(undefined, { maxResponseBytes: 1024 })), (c) => {
      executions++;
      c.header("Location", "/reports/1");
      return c.body(new Uint8Array(4096).fill(7), 201);
    });
    const server = await serveApp(app);

    const first = await send(server, { path: "/reports", key: "k" });
    const retry = await send(server, { path: "/reports", key: "k" });
    expect([first.status, first.body.length]).toEqual([201, 4096]);
    expect(retry.status).toBe(410);
    expect(retry.headers["content-type"]).toBe("application/problem+json");
    expect(retry.headers.location).toBe("/reports/1");
    expect(executions).toBe(1);
  });

  it("runs the handler unprotected when the store is down and failOpen is set", async () => {
    const log = new EventLog();
    const store = new MemoryStore();
    store.begin = () => Promise.reject(new Error("connect ECONNREFUSED"));
    const app = new Hono();
    let executions = 0;
    app.post("/orders", idempotency({ store, scope: "global", failOpen: true, onEvent: log.onEvent }), (c) =>
      c.json({ run: ++executions }, 201),
    );
    const server = await serveApp(app);

    expect((await send(server, { path: "/orders", key: "k" })).json()).toEqual({ run: 1 });
    expect((await send(server, { path: "/orders", key: "k" })).json()).toEqual({ run: 2 });
    expect(log.types()).toEqual(["fail-open", "fail-open"]);
  });
});

describe("notStarted and options", () => {
  it("releases the claim when the handler calls notStarted(c), whatever the status", async () => {
    const log = new EventLog();
    const app = new Hono();
    let executions = 0;
    app.post("/orders", idempotency(options(log)), (c) => {
      executions++;
      notStarted(c);
      return c.json({ error: "not allowed" }, 403);
    });
    const server = await serveApp(app);

    expect((await send(server, { path: "/orders", key: "k" })).status).toBe(403);
    const retry = await send(server, { path: "/orders", key: "k" });
    expect(retry.status).toBe(403);
    expect(retry.headers["idempotent-replayed"]).toBeUndefined();
    expect(executions).toBe(2);
    expect(log.types()).toEqual(["claimed", "not-started", "claimed", "not-started"]);
  });

  it("makes notStarted(c) a no-op for requests without a claim", async () => {
    const app = new Hono();
    app.post("/plain", (c) => {
      notStarted(c);
      return c.text("fine");
    });
    app.post("/nokey", idempotency(options()), (c) => {
      notStarted(c);
      return c.text("fine too");
    });
    const server = await serveApp(app);

    expect((await send(server, { path: "/plain", key: "k" })).text()).toBe("fine");
    expect((await send(server, { path: "/nokey" })).text()).toBe("fine too");
  });

  it("throws IdempotencyOptionsError naming the option at construction", () => {
    expect(() => idempotency({ store: new MemoryStore(), scope: "global", leaseMs: 0 })).toThrow(
      IdempotencyOptionsError,
    );
    try {
      idempotency({ store: new MemoryStore() } as unknown as IdempotencyOptions);
      expect.unreachable();
    } catch (error) {
      expect((error as IdempotencyOptionsError).option).toBe("scope");
    }
  });
});

describe("runtime neutrality", () => {
  it("uses only Web APIs in its source (no node: imports, no Buffer)", () => {
    const dir = fileURLToPath(new URL("../src", import.meta.url));
    for (const file of readdirSync(dir)) {
      const source = readFileSync(join(dir, file), "utf8");
      expect(source, file).not.toMatch(/from\s+["']node:|require\(|\bBuffer\b|\bprocess\./);
    }
  });
});
