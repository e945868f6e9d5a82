import { getRequestListener } from "@hono/node-server";
import { MemoryStore } from "@idempotency/core";
import { Hono } from "hono";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { immediateBody } from "../src/response.js";
import { type RunningServer, send, start } from "./support.js";

// Before @hono/node-server replaces the globals with its own lightweight Response (getRequestListener does).
const FetchResponse = globalThis.Response;
getRequestListener(() => new Response(null));
const Lightweight = globalThis.Response;

const servers: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

describe("immediateBody: @hono/node-server's Response read without building a Fetch Response", () => {
  it("is on: the server's Response is not the Fetch API's", () => {
    expect(Lightweight).not.toBe(FetchResponse);
  });

  it("reads a string, bytes or no body, with the status untouched and no reason phrase", () => {
    const text = new Lightweight('{"id":"ü"}', {
      status: 201,
      headers: { "content-type": "application/json" },
    });
    expect(immediateBody(text)).toEqual({ body: new TextEncoder().encode('{"id":"ü"}'), statusText: "" });
    expect(text.status).toBe(201);
    const bytes = new Uint8Array([0, 1, 255]);
    expect(immediateBody(new Lightweight(bytes))).toEqual({ body: bytes, statusText: "" });
    expect(immediateBody(new Lightweight(null, { status: 204 }))).toEqual({ body: null, statusText: "" });
  });

  it("leaves streams, built responses and other runtimes' responses to the stream reader", async () => {
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array([1]));
        controller.close();
      },
    });
    expect(immediateBody(new Lightweight(stream))).toBeUndefined();
    const built = new Lightweight("text", { statusText: "Made" });
    expect(built.statusText).toBe("Made"); // builds the Fetch Response, whose body is then the one to read
    expect(immediateBody(built)).toBeUndefined();
    expect(await built.text()).toBe("text");
    expect(immediateBody(new FetchResponse("text"))).toBeUndefined();
  });
});

describe("the captured response on @hono/node-server", () => {
  it("keeps the headers set with c.header() before c.json(), first and on replay (Set-Cookie on the first only)", async () => {
    const app = new Hono();
    let runs = 0;
    app.post("/orders", idempotency({ store: new MemoryStore(), scope: "global" }), (c) => {
      runs++;
      c.header("x-order", "o-1");
      c.header("set-cookie", "a=1", { append: true });
      c.header("set-cookie", "b=2", { append: true });
      return c.json({ id: "o-1", runs }, 201, { location: "/orders/o-1" });
    });
    const server = await start(app);
    servers.push(server);

    const first = await send(server, { path: "/orders", key: "k", json: { item: "book" } });
    const replay = await send(server, { path: "/orders", key: "k", json: { item: "book" } });
    expect(first.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    expect(replay.headers["set-cookie"]).toBeUndefined(); // a credential header: never replayed
    for (const response of [first, replay]) {
      expect(response.status).toBe(201);
      expect(response.text()).toBe('{"id":"o-1","runs":1}');
      expect(response.headers["content-type"]).toBe("application/json");
      expect(response.headers["content-length"]).toBe("21");
      expect(response.headers.location).toBe("/orders/o-1");
      expect(response.headers["x-order"]).toBe("o-1");
    }
    expect(first.headers["idempotent-replayed"]).toBeUndefined();
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });

  it("answers c.body(bytes), c.text() and c.body(null) byte for byte, first and on replay", async () => {
    const app = new Hono();
    const bytes = new Uint8Array([0, 13, 10, 255, 34]);
    app.use(idempotency({ store: new MemoryStore(), scope: "global" }));
    app.post("/bytes", (c) => c.body(bytes, 200, { "content-type": "application/octet-stream" }));
    app.post("/text", (c) => c.text("naïve ✓", 202));
    app.post("/none", (c) => c.body(null, 204));
    const server = await start(app);
    servers.push(server);

    for (const key of ["k1", "k1"]) {
      const response = await send(server, { path: "/bytes", key, body: "x" });
      expect([response.status, [...response.body], response.headers["content-length"]]).toEqual([
        200,
        [...bytes],
        "5",
      ]);
      const text = await send(server, { path: "/text", key, body: "x" });
      expect([text.status, text.text(), text.headers["content-type"]]).toEqual([
        202,
        "naïve ✓",
        "text/plain; charset=UTF-8",
      ]);
      const none = await send(server, { path: "/none", key, body: "x" });
      expect([none.status, none.body.length]).toEqual([204, 0]);
    }
  });
});
