import { request as rawRequest } from "node:http";
import { Readable } from "node:stream";
import { openRequest } from "@idempotency/binding-tests";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { FASTIFY_VERSIONS, recording, serve, until, untilNoConnections } from "./support.js";

describe.each(FASTIFY_VERSIONS)("%s response capture", (_name, lib) => {
  it("captures a hijacked reply written to reply.raw, completing the record before the client has the end", async () => {
    const { options, store, events } = recording();
    store.delays.complete = 50; // a slow store: an end that is not held back is caught
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/raw", (_request, reply) => {
        const run = ++runs;
        reply.hijack();
        reply.raw.writeHead(201, { "content-type": "text/plain", "x-run": String(run) });
        reply.raw.write("hijacked ");
        reply.raw.end(`run ${run}`);
      });
    });
    let completedAtEnd = false;
    const first = await send("/raw", {
      key: "k-raw",
      onEnd: () => {
        completedAtEnd = events.some((event) => event.type === "completed");
      },
    });
    expect([first.status, first.text(), first.headers["x-run"]]).toEqual([201, "hijacked run 1", "1"]);
    expect(completedAtEnd).toBe(true);
    const replay = await send("/raw", { key: "k-raw" });
    expect([replay.status, replay.text(), replay.headers["x-run"]]).toEqual([201, "hijacked run 1", "1"]);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });

  it("reads a stream piped into a hijacked reply to its end after the client left, and stores it", async () => {
    const { options, events } = recording();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let runs = 0;
    const { url, server, send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/raw-stream", (_request, reply) => {
        const run = ++runs;
        reply.hijack();
        reply.raw.setHeader("content-type", "text/plain");
        Readable.from(
          (async function* () {
            yield `first ${run}\n`;
            if (run === 1) await gate;
            yield `second ${run}\n`;
          })(),
        ).pipe(reply.raw);
      });
    });
    const received: Buffer[] = [];
    const req = rawRequest(`${url}/raw-stream`, {
      method: "POST",
      headers: { "idempotency-key": "k-gone", "content-length": "0" },
    });
    req.on("error", () => {});
    req.on("response", (res) => {
      res.on("error", () => {});
      res.on("data", (chunk: Buffer) => received.push(chunk));
    });
    req.end();
    await until(() => received.length > 0);
    req.destroy();
    await untilNoConnections(server);
    open();
    await until(() => events.some((event) => event.type === "completed"));
    const retry = await send("/raw-stream", { key: "k-gone" });
    expect([retry.status, retry.text()]).toEqual([200, "first 1\nsecond 1\n"]);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });

  it("replays a Web ReadableStream payload and a Response payload with its status and headers", async () => {
    const { options } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/web", async (_request, reply) => {
        const run = ++runs;
        reply.type("text/plain");
        return new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode("web "));
            controller.enqueue(new TextEncoder().encode(`stream ${run}`));
            controller.close();
          },
        });
      });
      app.post("/response", async () => {
        const run = ++runs;
        return new Response(`response ${run}`, {
          status: 202,
          headers: { "content-type": "text/plain", "x-run": String(run) },
        });
      });
    });
    const web = await send("/web", { key: "k-web" });
    expect([web.status, web.text()]).toEqual([200, "web stream 1"]);
    const webReplay = await send("/web", { key: "k-web" });
    expect([webReplay.text(), webReplay.headers["idempotent-replayed"]]).toEqual(["web stream 1", "true"]);
    const response = await send("/response", { key: "k-response" });
    expect([response.status, response.text(), response.headers["x-run"]]).toEqual([202, "response 2", "2"]);
    const replay = await send("/response", { key: "k-response" });
    expect([replay.status, replay.text(), replay.headers["x-run"]]).toEqual([202, "response 2", "2"]);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(2);
  });

  it("stores what the not-found handler answers after reply.callNotFound()", async () => {
    const { options } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.setNotFoundHandler((_request, reply) => {
        reply.code(404).send({ error: "no such thing" });
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/lookup", (_request, reply) => {
        runs++;
        reply.callNotFound();
      });
    });
    const first = await send("/lookup", { key: "k-404" });
    expect([first.status, first.text()]).toEqual([404, '{"error":"no such thing"}']);
    const replay = await send("/lookup", { key: "k-404" });
    expect([replay.status, replay.text(), replay.headers["idempotent-replayed"]]).toEqual([
      404,
      '{"error":"no such thing"}',
      "true",
    ]);
    expect(runs).toBe(1);
  });

  it("stores the 4xx an error handler turns a thrown error into", async () => {
    const { options } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.setErrorHandler((error: Error, _request, reply) => {
        reply.code(422).send({ error: error.message });
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/reject", async () => {
        runs++;
        throw new Error("out of stock");
      });
    });
    await send("/reject", { key: "k-422" });
    const replay = await send("/reject", { key: "k-422" });
    expect([replay.status, replay.text()]).toEqual([422, '{"error":"out of stock"}']);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });

  it("stores the payload after the app's onSend hooks and replays it as stored, without running them again", async () => {
    const { options } = recording();
    let runs = 0;
    const responses: number[] = [];
    const { send } = await serve(lib, async (app) => {
      app.addHook("onRequest", async (_request, reply) => {
        reply.header("access-control-allow-origin", "*");
      });
      app.addHook("onResponse", async (_request, reply) => {
        responses.push(reply.statusCode);
      });
      app.addHook("onSend", async (_request, reply, payload) => {
        reply.header("x-enveloped", "yes");
        return `{"data":${payload}}`;
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", async (_request, reply) => {
        reply.code(201);
        return { run: ++runs };
      });
    });
    const first = await send("/orders", { key: "k-env" });
    expect(first.text()).toBe('{"data":{"run":1}}');
    const replay = await send("/orders", { key: "k-env" });
    expect([replay.status, replay.text()]).toEqual([201, '{"data":{"run":1}}']);
    expect(replay.headers["x-enveloped"]).toBe("yes");
    expect(replay.headers["access-control-allow-origin"]).toBe("*");
    await until(() => responses.length === 2); // onResponse hooks see the replay too
    expect(responses).toEqual([201, 201]);
    expect(replay.headers["content-type"]).toBe(first.headers["content-type"]);
    expect(runs).toBe(1);
  });

  it("releases the claim when a streamed body fails: a retry runs again", async () => {
    const { options, events } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.setErrorHandler((error: Error, _request, reply) => {
        reply.code(500).send({ error: error.message });
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/broken", async (_request, reply) => {
        runs++;
        reply.type("text/plain");
        return new Readable({
          read() {
            this.destroy(new Error("disk gone"));
          },
        });
      });
    });
    expect((await send("/broken", { key: "k-broken" })).status).toBe(500);
    await until(() => events.some((event) => event.type === "released"));
    expect((await send("/broken", { key: "k-broken" })).status).toBe(500);
    expect(runs).toBe(2);
  });

  it("lets reply.notStarted() release the claim, and chains", async () => {
    const { options, events } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/forbidden", (_request, reply) => {
        runs++;
        reply.notStarted().code(403).send({ error: "forbidden" });
      });
      app.post("/unclaimed", (_request, reply) => {
        reply.notStarted().send("fine"); // no key: nothing is claimed, nothing happens
      });
    });
    expect((await send("/forbidden", { key: "k-ns" })).status).toBe(403);
    const retry = await send("/forbidden", { key: "k-ns" });
    expect([retry.status, retry.headers["idempotent-replayed"]]).toEqual([403, undefined]);
    expect(runs).toBe(2);
    expect(events.map((event) => event.type)).toEqual(["claimed", "not-started", "claimed", "not-started"]);
    expect((await send("/unclaimed")).text()).toBe("fine");
  });

  it("stores the response of a handler still running when its client gave up", async () => {
    const { options, events } = recording();
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let runs = 0;
    const { url, server, send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/slow", (_request, reply) => {
        runs++;
        void gate.then(() => reply.code(201).send({ late: true })); // answers later, from a callback
      });
    });
    const pending = openRequest(`${url}/slow`, { key: "k-late" });
    pending.response.catch(() => {});
    await until(() => runs === 1);
    pending.destroy();
    await untilNoConnections(server);
    open();
    await until(() => events.some((event) => event.type === "completed"));
    const retry = await send("/slow", { key: "k-late" });
    expect([retry.status, retry.text(), retry.headers["idempotent-replayed"]]).toEqual([
      201,
      '{"late":true}',
      "true",
    ]);
  });
});
