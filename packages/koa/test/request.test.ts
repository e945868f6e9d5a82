import { request as rawRequest } from "node:http";
import { httpRequest } from "@idempotency/binding-tests";
import { IdempotencyOptionsError, MemoryStore, PROBLEM_TYPES } from "@idempotency/core";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import type Koa3 from "koa";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import {
  newApp as createApp,
  MAJORS,
  noConnections,
  ORDER,
  setup,
  start,
  TIMEOUT,
  until,
} from "./support.js";

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

for (const [major, KoaApp] of MAJORS) {
  describe(major, () => {
    const newApp = () => createApp(KoaApp);

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
        "reads the stream itself when @koa/bodyparser ran first but skipped the content type",
        async () => {
          const { options } = setup();
          const app = newApp().use(bodyParser()).use(idempotency(options));
          const seen: Buffer[] = [];
          app.use(async (ctx) => {
            const chunks: Buffer[] = [];
            for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
            seen.push(Buffer.concat(chunks));
            ctx.body = { parsed: ctx.request.body, bytes: seen.at(-1)?.length };
          });
          const { url } = await start(app);
          const csv = { key: "k-csv", headers: { "content-type": "text/csv" }, body: "a,b\n1,2\n" };
          const first = await httpRequest(`${url}/import`, csv);
          const replay = await httpRequest(`${url}/import`, csv);
          const other = await httpRequest(`${url}/import`, { ...csv, body: "a,b\n1,3\n" });
          expect(first.json()).toEqual({ parsed: {}, bytes: 8 });
          expect(seen.map((bytes) => bytes.toString())).toEqual(["a,b\n1,2\n"]);
          expect(replay.headers["idempotent-replayed"]).toBe("true");
          expect(other.status).toBe(422);
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
  });
}
