import { request as rawRequest } from "node:http";
import {
  connect as connectHttp2,
  createServer as createHttp2Server,
  constants as http2Constants,
} from "node:http2";
import { type AddressInfo, connect } from "node:net";
import { Readable } from "node:stream";
import { httpRequest, openRequest } from "@idempotency/binding-tests";
import { type IdempotencyEvent, MemoryStore } from "@idempotency/core";
import { bodyParser } from "@koa/bodyparser";
import { describe, expect, it, vi } from "vitest";
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

for (const [major, KoaApp] of MAJORS) {
  describe(major, () => {
    const newApp = () => createApp(KoaApp);

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
        "reads a streamed response whose client left mid-stream to its end and stores it: the retry replays it",
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
          await until(() => events.some((e) => e.type === "completed"));
          expect(Buffer.concat(received).toString()).toBe("first 1\n");
          expect(events.map((e) => e.type)).toEqual(["claimed", "completed"]);
          const retry = await httpRequest(`${url}/s`, { key: "k-mid" });
          expect(retry.text()).toBe("first 1\nsecond 1\n");
          expect(retry.headers["idempotent-replayed"]).toBe("true");
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "stores a streamed response whose client left before it started: the retry replays it, no second run",
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
          await until(() => events.some((e) => e.type === "completed"));
          expect(events.map((e) => e.type)).toEqual(["claimed", "completed"]);
          const retry = await httpRequest(`${url}/s`, { key: "k-gone-stream" });
          expect(retry.text()).toBe("ab");
          expect(retry.headers["idempotent-replayed"]).toBe("true");
          expect(runs).toBe(1);
        },
        TIMEOUT,
      );

      it(
        "renews the lease of a handler that never responds, also after its client left, until maxExecutionMs; then frees the key after leaseMs",
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
            idempotency({
              store,
              scope: "global",
              now,
              leaseMs: 30_000,
              maxExecutionMs: 60_000,
              onEvent: (e) => events.push(e),
            }),
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
          /** Moves the engine's clock and its renewal timer together, one renewal interval at a time. */
          const step = async (intervals: number) => {
            for (let i = 0; i < intervals; i++) {
              const before = store.extendCalls;
              clock += 10_000;
              vi.advanceTimersByTime(10_000);
              await until(() => store.extendCalls > before || events.at(-1)?.type === "execution-limit");
              await new Promise((resolve) => setTimeout(resolve, 5)); // the renewal settles (real timers)
            }
          };
          try {
            const pending = openRequest(`${url}/hang`, { key: "k-hang" });
            pending.response.catch(() => {});
            await until(() => runs === 1);
            await step(3);
            expect(store.extendCalls).toBe(3);
            const busy = await httpRequest(`${url}/hang`, { key: "k-hang" });
            expect(busy.status).toBe(409);
            pending.destroy();
            await until(() => noConnections(server));
            await step(2); // the client left; renewal goes on
            expect(store.extendCalls).toBe(5);
            expect((await httpRequest(`${url}/hang`, { key: "k-hang" })).status).toBe(409);
            await step(1); // 60 s: maxExecutionMs reached
            expect(store.extendCalls).toBe(5);
            expect(events.at(-1)).toMatchObject({ type: "execution-limit", maxExecutionMs: 60_000 });
            clock += 19_999; // the lease renewed at 50 s lasts until 80 s
            expect((await httpRequest(`${url}/hang`, { key: "k-hang" })).status).toBe(409);
            clock += 1;
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
