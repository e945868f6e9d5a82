import { Readable } from "node:stream";
import { createGzip, gunzipSync } from "node:zlib";
import { httpRequest, openRequest } from "@idempotency/binding-tests";
import Koa3 from "koa";
import { describe, expect, it } from "vitest";
import { idempotency, notStarted } from "../src/index.js";
import { newApp as createApp, MAJORS, ORDER, setup, start, TIMEOUT, until } from "./support.js";

for (const [major, KoaApp] of MAJORS) {
  describe(major, () => {
    const newApp = () => createApp(KoaApp);

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
          store.delays.complete = 50;
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
          store.delays.complete = 50;
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
          store.delays.complete = 50;
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
