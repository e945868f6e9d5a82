import { request as rawRequest } from "node:http";
import {
  connect as connectHttp2,
  createServer as createHttp2Server,
  constants as http2Constants,
} from "node:http2";
import { type AddressInfo, connect } from "node:net";
import { Readable } from "node:stream";
import { createGzip, gunzipSync } from "node:zlib";
import { httpRequest, openRequest, TableStore } from "@idempotency/binding-tests";
import {
  type IdempotencyEvent,
  type IdempotencyOptions,
  IdempotencyOptionsError,
  MemoryStore,
  PROBLEM_TYPES,
} from "@idempotency/core";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa3 from "koa";
import Koa2 from "koa2";
import { afterEach, describe, expect, it, vi } from "vitest";
import { idempotency, notStarted } from "../src/index.js";
import { type KoaClass, listen } from "./app.js";

const TIMEOUT = 30_000;
const ORDER = '{"item":"apple","qty":2}';

interface Started {
  url: string;
  server: import("node:http").Server;
  close(): Promise<void>;
}

const running: Started[] = [];
afterEach(async () => {
  for (const app of running.splice(0)) {
    app.server.closeAllConnections();
    await app.close();
  }
});

async function start(app: Parameters<typeof listen>[0]): Promise<Started> {
  const started = await listen(app);
  running.push(started);
  return started;
}

/** Options over a counting store, recording events; `scope: "global"`. */
function setup(extra: Partial<IdempotencyOptions> = {}) {
  const store = new TableStore();
  const events: IdempotencyEvent[] = [];
  const options: IdempotencyOptions = {
    store,
    scope: "global",
    onEvent: (event) => events.push(event),
    ...extra,
  };
  return { store, events, options, types: () => events.map((event) => event.type) };
}

async function until(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error("condition not reached");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Whether the server has noticed every client disconnect. */
function noConnections(server: { getConnections(cb: (error: Error | null, count: number) => void): void }) {
  return new Promise<boolean>((resolve) => server.getConnections((_, count) => resolve(count === 0)));
}

describe("idempotency() construction", () => {
  it("throws IdempotencyOptionsError naming the option when an option is invalid", () => {
    const store = new MemoryStore();
    expect(() => idempotency({ store, scope: "global", leaseMs: -1 })).toThrow(IdempotencyOptionsError);
    try {
      idempotency({ store, scope: undefined as unknown as "global" });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyOptionsError);
      expect((error as IdempotencyOptionsError).option).toBe("scope");
    }
  });
});

for (const [major, KoaApp] of [
  ["koa 3", Koa3],
  ["koa 2", Koa2],
] as Array<[string, KoaClass]>) {
  describe(major, () => {
    function newApp(): Koa3 {
      const app = new KoaApp();
      app.silent = true;
      return app;
    }

    describe("request body", () => {
      it(
        "fingerprints ctx.request.rawBody when @koa/bodyparser ran first",
        async () => {
          const { options, store } = setup();
          const app = newApp();
          let runs = 0;
          app.use(bodyParser());
          app.use(idempotency(options));
          app.use(async (ctx) => {
            runs++;
            ctx.status = 201;
            ctx.body = { run: runs, got: ctx.request.body };
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/orders`, { key: "k1", json: ORDER });
          expect(first.status).toBe(201);
          expect(first.text()).toBe('{"run":1,"got":{"item":"apple","qty":2}}');
          const reordered = await httpRequest(`${url}/orders`, {
            key: "k1",
            json: '{ "qty": 2, "item": "apple" }',
          });
          expect(reordered.status).toBe(201);
          expect(reordered.headers["idempotent-replayed"]).toBe("true");
          expect(reordered.body.equals(first.body)).toBe(true);
          const other = await httpRequest(`${url}/orders`, { key: "k1", json: '{"item":"pear"}' });
          expect(other.status).toBe(422);
          expect((other.json() as { type: string }).type).toBe(PROBLEM_TYPES.keyReused);
          expect(runs).toBe(1);
          expect(store.calls.begin).toBe(3);
        },
        TIMEOUT,
      );

      it(
        "fingerprints the same body the same with the body parser before it, after it, or absent",
        async () => {
          const { options } = setup();
          const bodies: unknown[] = [];
          const handler = async (ctx: Koa3.Context) => {
            bodies.push(ctx.request.body);
            ctx.status = 201;
            ctx.body = { run: bodies.length };
          };
          const before = newApp().use(bodyParser()).use(idempotency(options)).use(handler);
          const after = newApp().use(idempotency(options)).use(bodyParser()).use(handler);
          const none = newApp().use(idempotency(options)).use(handler);
          const apps = await Promise.all([start(before), start(after), start(none)]);
          const responses = [];
          for (const { url } of apps) {
            responses.push(await httpRequest(`${url}/orders`, { key: "k-same", json: ORDER }));
          }
          expect(responses.map((res) => res.status)).toEqual([201, 201, 201]);
          expect(responses.map((res) => res.headers["idempotent-replayed"])).toEqual([
            undefined,
            "true",
            "true",
          ]);
          expect(responses.map((res) => res.text())).toEqual(Array(3).fill('{"run":1}'));
          expect(bodies).toEqual([{ item: "apple", qty: 2 }]);
        },
        TIMEOUT,
      );

      it(
        "leaves the body readable for a body parser after it",
        async () => {
          const { options } = setup();
          const app = newApp()
            .use(idempotency(options))
            .use(bodyParser({ enableTypes: ["json", "text"] }));
          app.use(async (ctx) => {
            ctx.body = { parsed: ctx.request.body, raw: ctx.request.rawBody };
          });
          const { url } = await start(app);
          const json = await httpRequest(`${url}/a`, { key: "k-json", json: ORDER });
          expect(json.json()).toEqual({ parsed: { item: "apple", qty: 2 }, raw: ORDER });
          const text = await httpRequest(`${url}/b`, {
            key: "k-text",
            headers: { "content-type": "text/plain" },
            body: "plain words",
          });
          expect(text.json()).toEqual({ parsed: "plain words", raw: "plain words" });
        },
        TIMEOUT,
      );

      it(
        "leaves the raw bytes readable from ctx.req for a handler without a body parser",
        async () => {
          const { options } = setup();
          const received: Buffer[] = [];
          const app = newApp().use(idempotency(options));
          app.use(async (ctx) => {
            const chunks: Buffer[] = [];
            for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
            received.push(Buffer.concat(chunks));
            ctx.status = 201;
            ctx.body = { bytes: received.at(-1)?.length };
          });
          const { url } = await start(app);
          const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 31) & 255));
          const init = {
            key: "k-bin",
            headers: { "content-type": "application/octet-stream" },
            body: payload,
          };
          const first = await httpRequest(`${url}/upload`, init);
          expect(first.status).toBe(201);
          expect(first.text()).toBe('{"bytes":300000}');
          expect(received[0]?.equals(payload)).toBe(true);
          const replay = await httpRequest(`${url}/upload`, init);
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          const changed = Buffer.from(payload);
          changed[299_999] = (changed[299_999] ?? 0) ^ 1;
          const other = await httpRequest(`${url}/upload`, { ...init, body: changed });
          expect(other.status).toBe(422);
          expect(received).toHaveLength(1);
        },
        TIMEOUT,
      );

      it(
        "reads the body also when an earlier middleware paused the request stream",
        async () => {
          const { options } = setup();
          const app = newApp();
          app.use(async (ctx, next) => {
            ctx.req.pause();
            await next();
          });
          app.use(idempotency(options)).use(bodyParser());
          app.use(async (ctx) => {
            ctx.body = ctx.request.body;
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/p`, { key: "k-paused", json: ORDER });
          const replay = await httpRequest(`${url}/p`, { key: "k-paused", json: ORDER });
          expect(first.json()).toEqual({ item: "apple", qty: 2 });
          expect(replay.headers["idempotent-replayed"]).toBe("true");
        },
        TIMEOUT,
      );

      it(
        "answers 413 for a body over maxRequestBytes without buffering it, and the connection goes on",
        async () => {
          const { options, store } = setup({ maxRequestBytes: 1024 });
          const app = newApp().use(idempotency(options)).use(bodyParser());
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = ctx.request.body;
          });
          const { url } = await start(app);
          const { Agent } = await import("node:http");
          const agent = new Agent({ keepAlive: true, maxSockets: 1 });
          const post = (key: string, chunks: string[]) =>
            new Promise<{ status?: number; text: string; socket: unknown }>((resolve, reject) => {
              // No Content-Length: the body is chunked, so only reading it can tell its size.
              const req = rawRequest(
                `${url}/big`,
                {
                  method: "POST",
                  agent,
                  headers: { "idempotency-key": key, "content-type": "application/json" },
                },
                (res) => {
                  const received: Buffer[] = [];
                  res.on("data", (chunk: Buffer) => received.push(chunk));
                  res.on("end", () =>
                    resolve({
                      status: res.statusCode,
                      text: Buffer.concat(received).toString(),
                      socket: req.socket,
                    }),
                  );
                },
              );
              req.on("error", reject);
              // The first chunk alone is over the limit: the answer comes before the rest is even sent.
              const [head = "", ...tail] = chunks;
              req.write(head);
              if (head.length > 1024) req.once("response", () => req.end(tail.join("")));
              else req.end(tail.join(""));
            });
          const big = await post("k-big", [`{"pad":"${"x".repeat(2000)}`, `${"y".repeat(2000)}"}`]);
          const small = await post("k-small", ['{"item":', '"apple"}']);
          agent.destroy();
          expect(big.status).toBe(413);
          expect((JSON.parse(big.text) as { type: string }).type).toBe(PROBLEM_TYPES.requestTooLarge);
          expect(small.status).toBe(200);
          expect(small.text).toBe('{"item":"apple"}');
          expect(small.socket).toBe(big.socket);
          expect(runs).toBe(1);
          expect(store.calls.begin).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "keeps each request's body apart on one keep-alive connection",
        async () => {
          const { options } = setup();
          const app = newApp().use(idempotency(options)).use(bodyParser());
          app.use(async (ctx) => {
            ctx.body = ctx.request.body;
          });
          const { url } = await start(app);
          const { Agent } = await import("node:http");
          const agent = new Agent({ keepAlive: true, maxSockets: 1 });
          const post = (key: string, body: string) =>
            new Promise<{ text: string; socket: unknown }>((resolve, reject) => {
              const req = rawRequest(
                `${url}/k`,
                {
                  method: "POST",
                  agent,
                  headers: {
                    "idempotency-key": key,
                    "content-type": "application/json",
                    "content-length": String(Buffer.byteLength(body)),
                  },
                },
                (res) => {
                  const chunks: Buffer[] = [];
                  res.on("data", (chunk: Buffer) => chunks.push(chunk));
                  res.on("end", () =>
                    resolve({ text: Buffer.concat(chunks).toString(), socket: req.socket }),
                  );
                },
              );
              req.on("error", reject);
              req.end(body);
            });
          const a = await post("k-a", '{"n":1}');
          const b = await post("k-b", '{"n":2}');
          agent.destroy();
          expect(a.text).toBe('{"n":1}');
          expect(b.text).toBe('{"n":2}');
          expect(b.socket).toBe(a.socket);
        },
        TIMEOUT,
      );

      it(
        "answers 500 through Koa's error handling, claiming nothing, when an earlier middleware consumed the body without keeping it",
        async () => {
          const { options, store } = setup();
          const errors: Error[] = [];
          const app = newApp();
          app.on("error", (error: Error) => errors.push(error));
          app.use(async (ctx, next) => {
            for await (const _ of ctx.req) {
              // a parser that keeps no raw copy
            }
            await next();
          });
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = "ran";
          });
          const { url } = await start(app);
          const res = await httpRequest(`${url}/orders`, { key: "k-consumed", json: ORDER });
          expect(res.status).toBe(500);
          expect(runs).toBe(0);
          expect(store.totalCalls).toBe(0);
          expect(errors).toHaveLength(1);
          expect((errors[0] as Error & { code: string }).code).toBe("ERR_IDEMPOTENCY_BODY_CONSUMED");
          expect(errors[0]?.message).toContain(
            "Mount idempotency() before the middleware that reads the body",
          );
        },
        TIMEOUT,
      );

      it(
        "fingerprints the parsed body when an earlier parser kept no raw copy",
        async () => {
          const { options } = setup();
          const app = newApp();
          app.use(async (ctx, next) => {
            const chunks: Buffer[] = [];
            for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
            (ctx.request as { body?: unknown }).body = JSON.parse(Buffer.concat(chunks).toString());
            await next();
          });
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = { run: runs };
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/orders`, { key: "k-parsed", json: ORDER });
          const reordered = await httpRequest(`${url}/orders`, {
            key: "k-parsed",
            json: '{"qty":2,"item":"apple"}',
          });
          const other = await httpRequest(`${url}/orders`, { key: "k-parsed", json: '{"item":"pear"}' });
          expect(first.text()).toBe('{"run":1}');
          expect(reordered.headers["idempotent-replayed"]).toBe("true");
          expect(other.status).toBe(422);
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "does not read the body when the fingerprint does not need it",
        async () => {
          const { options } = setup({ fingerprint: false });
          const app = newApp();
          app.use(async (ctx, next) => {
            for await (const _ of ctx.req) {
              // consumed before the middleware, no raw copy
            }
            await next();
          });
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = `ran ${runs}`;
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/orders`, { key: "k-nofp", json: ORDER });
          const second = await httpRequest(`${url}/orders`, { key: "k-nofp", json: '{"other":1}' });
          expect(first.text()).toBe("ran 1");
          expect(second.text()).toBe("ran 1");
          expect(second.headers["idempotent-replayed"]).toBe("true");
        },
        TIMEOUT,
      );

      it(
        "claims nothing when the client aborts the upload mid-body",
        async () => {
          const { options, store } = setup();
          const app = newApp();
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = "ran";
          });
          const { url, server } = await start(app);
          const req = rawRequest(`${url}/upload`, {
            method: "POST",
            headers: { "idempotency-key": "k-abort", "content-length": "1000" },
          });
          req.on("error", () => {});
          req.write(Buffer.alloc(10));
          await new Promise((resolve) => setTimeout(resolve, 50));
          req.destroy();
          await until(() => noConnections(server));
          expect(runs).toBe(0);
          expect(store.calls.begin).toBe(0);
          const retry = await httpRequest(`${url}/upload`, { key: "k-abort", body: Buffer.alloc(1000) });
          expect(retry.text()).toBe("ran");
        },
        TIMEOUT,
      );
    });

    describe("paths and mounting", () => {
      it(
        "uses the concrete path under nested @koa/router prefixes and route parameters",
        async () => {
          const { options, events } = setup();
          const inner = new Router();
          let runs = 0;
          inner.post("/orders/:id", idempotency(options), async (ctx) => {
            runs++;
            ctx.body = { id: ctx.params.id, run: runs };
          });
          const outer = new Router({ prefix: "/api" });
          outer.use("/v1", inner.routes());
          const app = newApp().use(outer.routes());
          const { url } = await start(app);
          const a = await httpRequest(`${url}/api/v1/orders/1?x=1`, { key: "k-path", json: ORDER });
          const b = await httpRequest(`${url}/api/v1/orders/2?x=1`, { key: "k-path", json: ORDER });
          const again = await httpRequest(`${url}/api/v1/orders/1?x=1`, { key: "k-path", json: ORDER });
          expect(a.json()).toEqual({ id: "1", run: 1 });
          expect(b.json()).toEqual({ id: "2", run: 2 });
          expect(again.headers["idempotent-replayed"]).toBe("true");
          expect(events.filter((e) => e.type === "claimed").map((e) => e.path)).toEqual([
            "/api/v1/orders/1",
            "/api/v1/orders/2",
          ]);
        },
        TIMEOUT,
      );

      it(
        "uses the path the client sent when a mount-style middleware strips a prefix from ctx.path",
        async () => {
          const { options, events } = setup();
          const app = newApp();
          app.use(async (ctx, next) => {
            // what koa-mount does for a sub-app mounted at /shop
            if (!ctx.path.startsWith("/shop/")) return;
            ctx.path = ctx.path.slice("/shop".length);
            await next();
          });
          app.use(idempotency(options));
          app.use(async (ctx) => {
            ctx.body = ctx.path;
          });
          const { url } = await start(app);
          const res = await httpRequest(`${url}/shop/orders?q=1`, { key: "k-mount", json: ORDER });
          expect(res.text()).toBe("/orders");
          expect(events[0]?.path).toBe("/shop/orders");
        },
        TIMEOUT,
      );
    });

    describe("request translation", () => {
      it(
        "joins repeated header fields for scope and fingerprint functions, as WHATWG Headers does",
        async () => {
          const seen: Array<string | null> = [];
          const { options } = setup({
            scope: (request) => {
              seen.push(request.headers.get("User-Agent"), request.headers.get("x-missing"));
              return "global";
            },
          });
          const app = newApp().use(idempotency(options));
          app.use(async (ctx) => {
            ctx.body = "ok";
          });
          const { url } = await start(app);
          await httpRequest(`${url}/x`, { key: "k-h", headers: { "user-agent": ["first", "second"] } });
          expect(seen).toEqual(["first, second", null]);
        },
        TIMEOUT,
      );

      it(
        "hands an error thrown by the scope function to Koa's error handling, claiming nothing",
        async () => {
          const failure = new Error("no tenant");
          const { options, store } = setup({
            scope: () => {
              throw failure;
            },
          });
          const errors: Error[] = [];
          const app = newApp();
          app.on("error", (error: Error) => errors.push(error));
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = "ran";
          });
          const { url } = await start(app);
          const res = await httpRequest(`${url}/x`, { key: "k-scope", json: ORDER });
          expect(res.status).toBe(500);
          expect(res.text()).toBe("Internal Server Error");
          expect(errors).toEqual([failure]);
          expect(runs).toBe(0);
          expect(store.totalCalls).toBe(0);
        },
        TIMEOUT,
      );

      it(
        "lets the first middleware that claims a request decide when it is mounted twice",
        async () => {
          const { options, store } = setup();
          const router = new Router();
          let runs = 0;
          router.post("/orders", idempotency(options), async (ctx) => {
            runs++;
            ctx.status = 201;
            ctx.body = { run: runs };
          });
          const app = newApp().use(idempotency(options)).use(router.routes());
          const { url } = await start(app);
          const first = await httpRequest(`${url}/orders`, { key: "k-twice", json: ORDER });
          const replay = await httpRequest(`${url}/orders`, { key: "k-twice", json: ORDER });
          expect(first.status).toBe(201);
          expect(first.text()).toBe('{"run":1}');
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(runs).toBe(1);
          expect(store.calls.begin).toBe(2);
        },
        TIMEOUT,
      );
    });

    describe("error handling", () => {
      it(
        "hands a thrown error to Koa's default handler unchanged: 500, released, a retry runs again",
        async () => {
          const { options, types } = setup();
          const errors: Error[] = [];
          const app = newApp();
          app.on("error", (error: Error) => errors.push(error));
          app.use(idempotency(options));
          const thrown: Error[] = [];
          app.use(async () => {
            const error = new Error("kaboom");
            thrown.push(error);
            throw error;
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/x`, { key: "k-err", json: ORDER });
          const retry = await httpRequest(`${url}/x`, { key: "k-err", json: ORDER });
          for (const res of [first, retry]) {
            expect(res.status).toBe(500);
            expect(res.text()).toBe("Internal Server Error");
            expect(res.headers["idempotent-replayed"]).toBeUndefined();
          }
          expect(errors).toEqual(thrown);
          expect(thrown).toHaveLength(2);
          expect(types()).toEqual(["claimed", "released", "claimed", "released"]);
        },
        TIMEOUT,
      );

      it(
        "stores the 4xx Koa's default handler makes of ctx.throw(400) and replays it",
        async () => {
          const { options } = setup();
          const app = newApp().use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.set("x-run", String(runs));
            ctx.throw(400, "item is required");
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/x`, { key: "k-400", json: ORDER });
          const replay = await httpRequest(`${url}/x`, { key: "k-400", json: ORDER });
          expect(first.status).toBe(400);
          expect(first.text()).toBe("item is required");
          expect(replay.status).toBe(400);
          expect(replay.text()).toBe("item is required");
          expect(replay.headers["content-type"]).toBe(first.headers["content-type"]);
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "decides on the status an error middleware between it and the handler produces",
        async () => {
          const { options } = setup();
          const app = newApp().use(idempotency(options));
          app.use(async (ctx, next) => {
            try {
              await next();
            } catch (error) {
              ctx.status = (error as { retryable?: boolean }).retryable ? 503 : 409;
              ctx.body = { error: (error as Error).message };
            }
          });
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            throw Object.assign(new Error(`failed ${runs}`), { retryable: ctx.path === "/retryable" });
          });
          const { url } = await start(app);
          expect((await httpRequest(`${url}/retryable`, { key: "k-a" })).status).toBe(503);
          expect((await httpRequest(`${url}/retryable`, { key: "k-a" })).text()).toBe('{"error":"failed 2"}');
          expect((await httpRequest(`${url}/conflict`, { key: "k-b" })).status).toBe(409);
          expect((await httpRequest(`${url}/conflict`, { key: "k-b" })).text()).toBe('{"error":"failed 4"}');
          expect(runs).toBe(4);
        },
        TIMEOUT,
      );

      it(
        "releases the claim when a streamed body fails before its first byte",
        async () => {
          const { options, types } = setup();
          const app = newApp().use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.body = new Readable({
              read() {
                this.destroy(new Error("disk gone"));
              },
            });
          });
          const { url } = await start(app);
          for (const attempt of [1, 2]) {
            const res = httpRequest(`${url}/file`, { key: "k-stream-err" });
            // Koa 3 pipes with stream.pipeline, which destroys the response; Koa 2 answers 500.
            if (major === "koa 3") await expect(res).rejects.toThrow("socket hang up");
            else expect((await res).status).toBe(500);
            await until(() => types().length === attempt * 2);
          }
          expect(runs).toBe(2);
          expect(types()).toEqual(["claimed", "released", "claimed", "released"]);
        },
        TIMEOUT,
      );

      it(
        "releases the claim at once when a streamed body fails mid-way",
        async () => {
          const { options, events } = setup();
          const app = newApp().use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            let sent = false;
            ctx.type = "application/octet-stream";
            ctx.body = new Readable({
              read() {
                if (!sent) {
                  sent = true;
                  this.push(Buffer.alloc(1024, 1));
                } else setImmediate(() => this.destroy(new Error("disk gone")));
              },
            });
          });
          const { url } = await start(app);
          const pending = openRequest(`${url}/file`, { key: "k-cut" });
          pending.response.catch(() => {});
          // Koa 3 destroys the response; on Koa 2 it stays open until the client gives up. The claim is
          // released at once on both.
          await until(() => events.some((e) => e.type === "released"));
          pending.destroy();
          expect(events.find((e) => e.type === "released")).toMatchObject({ reason: "no-response" });
          const retry = openRequest(`${url}/file`, { key: "k-cut" });
          retry.response.catch(() => {});
          await until(() => runs === 2);
          retry.destroy();
        },
        TIMEOUT,
      );
    });

    describe("responses", () => {
      it(
        "captures and replays a handler that bypasses Koa with ctx.respond = false",
        async () => {
          const { options } = setup();
          const app = newApp().use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.respond = false;
            ctx.res.setHeader("x-early", "1");
            ctx.res.writeHead(202, { "content-type": "text/csv", "x-run": String(runs) });
            ctx.res.write("a,b\n");
            ctx.res.end("1,2\n");
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/export`, { key: "k-raw" });
          const replay = await httpRequest(`${url}/export`, { key: "k-raw" });
          expect(first.status).toBe(202);
          expect(first.text()).toBe("a,b\n1,2\n");
          expect(replay.status).toBe(202);
          expect(replay.text()).toBe("a,b\n1,2\n");
          expect(replay.headers["content-type"]).toBe("text/csv");
          expect(replay.headers["x-run"]).toBe("1");
          expect(replay.headers["x-early"]).toBe("1");
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "does not send the head early when a handler flushes headers before its body",
        async () => {
          const { options, store } = setup();
          store.completeDelayMs = 50;
          const app = newApp().use(idempotency(options));
          app.use(async (ctx) => {
            ctx.status = 201;
            ctx.type = "text/plain";
            ctx.flushHeaders();
            ctx.body = "made";
          });
          const { url } = await start(app);
          let completedAtEnd: boolean | undefined;
          const first = await httpRequest(`${url}/x`, {
            key: "k-flush",
            onEnd: () => {
              completedAtEnd = store.calls.complete === 1;
            },
          });
          expect(first.status).toBe(201);
          expect(first.text()).toBe("made");
          expect(completedAtEnd).toBe(true);
          const replay = await httpRequest(`${url}/x`, { key: "k-flush" });
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(replay.text()).toBe("made");
        },
        TIMEOUT,
      );

      it(
        "holds back the end of a streamed body with a Content-Length until the record is completed",
        async () => {
          const { options, store, events } = setup();
          store.completeDelayMs = 50;
          const app = newApp().use(idempotency(options));
          app.use(async (ctx) => {
            ctx.type = "application/octet-stream";
            ctx.length = 3 * 1024;
            ctx.body = Readable.from([Buffer.alloc(1024, 1), Buffer.alloc(1024, 2), Buffer.alloc(1024, 3)]);
          });
          const { url } = await start(app);
          let completedAtEnd: boolean | undefined;
          const first = await httpRequest(`${url}/x`, {
            key: "k-length",
            onEnd: () => {
              completedAtEnd = events.some((event) => event.type === "completed");
            },
          });
          expect(completedAtEnd).toBe(true);
          expect(first.headers["content-length"]).toBe("3072");
          expect(first.headers["transfer-encoding"]).toBeUndefined();
          const replay = await httpRequest(`${url}/x`, { key: "k-length" });
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(replay.body.equals(first.body)).toBe(true);
          expect(first.body.equals(Buffer.concat([1, 2, 3].map((b) => Buffer.alloc(1024, b))))).toBe(true);
        },
        TIMEOUT,
      );

      it(
        "stores what Koa finally sends, also after an outer middleware transformed the body",
        async () => {
          const { options } = setup();
          const app = newApp();
          // What a compression middleware does after the handler: replace ctx.body with its gzip stream.
          app.use(async (ctx, next) => {
            await next();
            if (ctx.get("accept-encoding") !== "gzip" || ctx.response.get("content-encoding")) return;
            ctx.set("Content-Encoding", "gzip");
            ctx.remove("Content-Length");
            ctx.body = Readable.from([Buffer.from(ctx.body as string)]).pipe(createGzip());
          });
          app.use(idempotency(options));
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            ctx.type = "text/plain";
            ctx.body = "a body worth compressing ".repeat(20);
          });
          const { url } = await start(app);
          const init = { key: "k-gzip", headers: { "accept-encoding": "gzip" } };
          const first = await httpRequest(`${url}/x`, init);
          const replay = await httpRequest(`${url}/x`, init);
          expect(first.headers["content-encoding"]).toBe("gzip");
          expect(gunzipSync(first.body).toString()).toBe("a body worth compressing ".repeat(20));
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(replay.headers["content-encoding"]).toBe("gzip");
          expect(replay.body.equals(first.body)).toBe(true);
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "refuses a write after end while the end waits for the store",
        async () => {
          const { options, store } = setup();
          store.completeDelayMs = 50;
          const app = newApp().use(idempotency(options));
          const results: unknown[] = [];
          app.use(async (ctx) => {
            ctx.respond = false;
            ctx.res.end("whole");
            results.push(ctx.res.write("late", (error) => results.push((error as { code?: string })?.code)));
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/x`, { key: "k-late-write" });
          const replay = await httpRequest(`${url}/x`, { key: "k-late-write" });
          expect(first.text()).toBe("whole");
          expect(replay.text()).toBe("whole");
          expect(results).toEqual([false, "ERR_STREAM_WRITE_AFTER_END"]);
        },
        TIMEOUT,
      );

      it(
        "leaves replays and problems to Koa's response handling, so outer middleware still sees them",
        async () => {
          const { options } = setup();
          const seen: number[] = [];
          const app = newApp();
          app.use(async (ctx, next) => {
            await next();
            seen.push(ctx.status);
            ctx.set("x-outer", "yes");
          });
          app.use(idempotency(options));
          app.use(async (ctx) => {
            ctx.status = 201;
            ctx.body = { ok: true };
          });
          const { url } = await start(app);
          const first = await httpRequest(`${url}/x`, { key: "k-outer", json: ORDER });
          const replay = await httpRequest(`${url}/x`, { key: "k-outer", json: ORDER });
          const conflict = await httpRequest(`${url}/x`, { key: "k-outer", json: "{}" });
          expect(seen).toEqual([201, 201, 422]);
          expect([first, replay, conflict].map((res) => res.headers["x-outer"])).toEqual([
            "yes",
            "yes",
            "yes",
          ]);
          expect(conflict.headers["content-type"]).toBe("application/problem+json");
        },
        TIMEOUT,
      );

      it(
        "passes requests through untouched when not protected, and notStarted is then a no-op",
        async () => {
          const { options, store } = setup();
          const app = newApp().use(idempotency(options));
          app.use(async (ctx) => {
            notStarted(ctx);
            ctx.body = `${ctx.method} ok`;
          });
          const { url } = await start(app);
          expect((await httpRequest(`${url}/x`, { json: ORDER })).text()).toBe("POST ok");
          expect((await httpRequest(`${url}/x`, { method: "PUT", key: "k-put" })).text()).toBe("PUT ok");
          expect(store.totalCalls).toBe(0);
        },
        TIMEOUT,
      );
    });

    describe("HTTP/2", () => {
      it(
        "captures, replays and survives a cancelled stream over node:http2's compatibility API",
        async () => {
          const { options, events } = setup();
          const app = newApp().use(idempotency(options)).use(bodyParser());
          let release!: () => void;
          const gate = new Promise<void>((resolve) => {
            release = resolve;
          });
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            if (ctx.path === "/slow") await gate;
            if (ctx.path === "/chunks") {
              ctx.type = "text/plain";
              ctx.body = Readable.from(["a", "b", "c"]);
              return;
            }
            ctx.status = 201;
            ctx.body = { run: runs, got: ctx.request.body };
          });
          const server = createHttp2Server(app.callback());
          await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
          const client = connectHttp2(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
          try {
            const send = (path: string, key: string, body?: string) => {
              const stream = client.request({
                ":method": "POST",
                ":path": path,
                "content-type": "application/json",
                "idempotency-key": key,
              });
              const response = new Promise<{ status: unknown; replayed: unknown; text: string }>(
                (resolve, reject) => {
                  let head: Record<string, unknown> = {};
                  const chunks: Buffer[] = [];
                  stream.on("response", (headers) => {
                    head = headers;
                  });
                  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
                  stream.on("error", reject);
                  stream.on("end", () =>
                    resolve({
                      status: head[":status"],
                      replayed: head["idempotent-replayed"],
                      text: Buffer.concat(chunks).toString(),
                    }),
                  );
                },
              );
              stream.end(body);
              return { stream, response };
            };
            const first = await send("/orders", "k-h2", ORDER).response;
            const replay = await send("/orders", "k-h2", ORDER).response;
            const other = await send("/orders", "k-h2", '{"item":"pear"}').response;
            expect(first).toEqual({ status: 201, replayed: undefined, text: `{"run":1,"got":${ORDER}}` });
            expect(replay).toEqual({ status: 201, replayed: "true", text: first.text });
            expect(other.status).toBe(422);
            const chunks = await send("/chunks", "k-h2-chunks").response;
            const chunksAgain = await send("/chunks", "k-h2-chunks").response;
            expect(chunks).toEqual({ status: 200, replayed: undefined, text: "abc" });
            expect(chunksAgain).toEqual({ status: 200, replayed: "true", text: "abc" });

            const cancelled = send("/slow", "k-h2-gone");
            cancelled.response.catch(() => {});
            await until(() => runs === 3);
            cancelled.stream.close(http2Constants.NGHTTP2_CANCEL);
            await until(() => cancelled.stream.closed);
            release();
            await until(() => events.filter((e) => e.type === "completed").length === 3);
            const retry = await send("/slow", "k-h2-gone").response;
            expect(retry).toEqual({ status: 201, replayed: "true", text: '{"run":3,"got":{}}' });
            expect(runs).toBe(3);
          } finally {
            client.close();
            await new Promise((resolve) => server.close(resolve));
          }
        },
        TIMEOUT,
      );
    });

    describe("client disconnect", () => {
      it(
        "stores the result of a handler whose client reset the connection mid-request, and replays it",
        async () => {
          const { options, events } = setup();
          const errors: Array<string | undefined> = [];
          const app = newApp();
          app.on("error", (error: NodeJS.ErrnoException) => errors.push(error.code));
          app.use(idempotency(options));
          let release!: () => void;
          const gate = new Promise<void>((resolve) => {
            release = resolve;
          });
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            await gate;
            ctx.status = 201;
            ctx.body = { run: runs };
          });
          const { url, server } = await start(app);
          const { port } = new URL(url);
          const socket = connect(Number(port), "127.0.0.1");
          socket.on("error", () => {});
          socket.write(
            "POST /reset HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: k-rst\r\nContent-Length: 0\r\n\r\n",
          );
          await until(() => runs === 1);
          socket.resetAndDestroy(); // an abrupt close (RST): Koa reports ECONNRESET to ctx.onerror
          await until(() => noConnections(server));
          await until(() => errors.length === 1);
          release();
          await until(() => events.some((e) => e.type === "completed"));
          const retry = await httpRequest(`${url}/reset`, { key: "k-rst" });
          expect(errors).toEqual(["ECONNRESET"]);
          expect(retry.status).toBe(201);
          expect(retry.text()).toBe('{"run":1}');
          expect(retry.headers["idempotent-replayed"]).toBe("true");
          expect(events.map((e) => e.type)).toEqual(["claimed", "completed", "replayed"]);
        },
        TIMEOUT,
      );

      it(
        "releases the claim of a streamed response whose client left mid-stream",
        async () => {
          const { options, events } = setup();
          const app = newApp().use(idempotency(options));
          let release!: () => void;
          const gate = new Promise<void>((resolve) => {
            release = resolve;
          });
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            const run = runs;
            ctx.type = "text/plain";
            ctx.body = Readable.from(
              (async function* () {
                yield `first ${run}\n`;
                if (run === 1) await gate;
                yield `second ${run}\n`;
              })(),
            );
          });
          const { url, server } = await start(app);
          const received: Buffer[] = [];
          const req = rawRequest(`${url}/s`, {
            method: "POST",
            headers: { "idempotency-key": "k-mid", "content-length": "0" },
          });
          req.on("error", () => {});
          req.on("response", (res) => res.on("data", (chunk: Buffer) => received.push(chunk)));
          req.end();
          await until(() => received.length > 0);
          req.destroy();
          await until(() => noConnections(server));
          release();
          await until(() => events.some((e) => e.type === "released"));
          expect(Buffer.concat(received).toString()).toBe("first 1\n");
          expect(events.map((e) => e.type)).toEqual(["claimed", "released"]);
          const retry = await httpRequest(`${url}/s`, { key: "k-mid" });
          expect(retry.text()).toBe("first 2\nsecond 2\n");
          expect(runs).toBe(2);
        },
        TIMEOUT,
      );

      it(
        "releases the claim of a streamed response whose client left before it started",
        async () => {
          const { options, events } = setup();
          const app = newApp().use(idempotency(options));
          let release!: () => void;
          const gate = new Promise<void>((resolve) => {
            release = resolve;
          });
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            await gate;
            ctx.body = Readable.from([Buffer.from("a"), Buffer.from("b")]);
          });
          const { url, server } = await start(app);
          const pending = openRequest(`${url}/s`, { key: "k-gone-stream" });
          pending.response.catch(() => {});
          await until(() => runs === 1);
          pending.destroy();
          await until(() => noConnections(server));
          release();
          await until(() => events.some((e) => e.type === "released"));
          expect(events.map((e) => e.type)).toEqual(["claimed", "released"]);
          const retry = await httpRequest(`${url}/s`, { key: "k-gone-stream" });
          expect(retry.text()).toBe("ab");
          expect(runs).toBe(2);
        },
        TIMEOUT,
      );

      it(
        "renews the lease while the client waits, stops when it leaves a handler that never responds, and frees the key after leaseMs",
        async () => {
          let clock = 1_000_000;
          const now = () => clock;
          class CountingStore extends MemoryStore {
            extendCalls = 0;
            override async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
              this.extendCalls++;
              return super.extend(key, token, leaseMs);
            }
          }
          const store = new CountingStore({ now });
          const events: IdempotencyEvent[] = [];
          const app = newApp().use(
            idempotency({ store, scope: "global", now, leaseMs: 30_000, onEvent: (e) => events.push(e) }),
          );
          let runs = 0;
          app.use(async (ctx) => {
            runs++;
            if (runs === 1) {
              ctx.respond = false; // and never ends the response
              return;
            }
            ctx.body = `run ${runs}`;
          });
          const { url, server } = await start(app);
          // Only the engine's renewal interval is faked; the HTTP server keeps real time.
          vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
          try {
            const pending = openRequest(`${url}/hang`, { key: "k-hang" });
            pending.response.catch(() => {});
            await until(() => runs === 1);
            clock += 10_000;
            vi.advanceTimersByTime(10_000);
            await until(() => store.extendCalls === 1);
            clock += 25_000; // past the first lease, within the renewed one
            const busy = await httpRequest(`${url}/hang`, { key: "k-hang" });
            expect(busy.status).toBe(409);
            pending.destroy();
            await until(() => noConnections(server));
            clock += 30_000;
            vi.advanceTimersByTime(30_000);
            expect(store.extendCalls).toBe(1);
            const retry = await httpRequest(`${url}/hang`, { key: "k-hang" });
            expect(retry.text()).toBe("run 2");
            expect(
              events.filter((e) => e.type === "claimed").map((e) => (e as { takeover: boolean }).takeover),
            ).toEqual([false, true]);
          } finally {
            vi.useRealTimers();
          }
        },
        TIMEOUT,
      );
    });
  });
}

describe("koa 3 body types", () => {
  const bodies: Array<[string, () => unknown, string]> = [
    ["a Blob", () => new Blob(["blob ", "body"]), "blob body"],
    ["a Web ReadableStream", () => new Blob(["web ", "stream"]).stream(), "web stream"],
    ["a Response", () => new Response("response body"), "response body"],
  ];
  for (const [what, make, text] of bodies) {
    it(
      `captures and replays ${what} body`,
      async () => {
        const { options } = setup();
        const app = new Koa3().use(idempotency(options));
        let runs = 0;
        app.use(async (ctx) => {
          runs++;
          ctx.type = "text/plain";
          ctx.body = make();
        });
        const { url } = await start(app);
        const first = await httpRequest(`${url}/b`, { key: "k-body" });
        const replay = await httpRequest(`${url}/b`, { key: "k-body" });
        expect(first.text()).toBe(text);
        expect(replay.text()).toBe(text);
        expect(replay.headers["idempotent-replayed"]).toBe("true");
        expect(runs).toBe(1);
      },
      TIMEOUT,
    );
  }
});
