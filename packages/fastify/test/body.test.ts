import { connect } from "node:net";
import type { Readable } from "node:stream";
import { createGunzip, gzipSync } from "node:zlib";
import { PROBLEM_TYPES } from "@idempotency/core";
import { describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { FASTIFY_VERSIONS, recording, serve } from "./support.js";

/** Reads a stream to its end as text. */
async function text(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

describe.each(FASTIFY_VERSIONS)("%s request bodies", (_name, lib) => {
  it("leaves the exact bytes to a custom JSON parser that keeps big integers, and fingerprints every digit", async () => {
    const { options } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.removeContentTypeParser("application/json");
      // Numbers past 2^53 stay exact: they are kept as strings before JSON.parse sees them.
      app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
        done(null, JSON.parse((body as string).replace(/:\s*(\d{16,})/g, ':"$1"')));
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", async (request) => ({ run: ++runs, qty: (request.body as { qty: string }).qty }));
    });
    const first = await send("/orders", { key: "k-big", json: '{"qty": 9007199254740993}' });
    expect(first.text()).toBe('{"run":1,"qty":"9007199254740993"}');
    const reordered = await send("/orders", { key: "k-big", json: '{ "qty":9007199254740993 }' });
    expect(reordered.headers["idempotent-replayed"]).toBe("true");
    const rounded = await send("/orders", { key: "k-big", json: '{"qty": 9007199254740992}' });
    expect(rounded.status).toBe(422);
    expect(runs).toBe(1);
  });

  it("leaves the body to Fastify's text parser, a string parser and a stream parser", async () => {
    const { options } = recording();
    const { send } = await serve(lib, async (app) => {
      app.addContentTypeParser(
        "application/x-www-form-urlencoded",
        { parseAs: "string" },
        (_request, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
      );
      app.addContentTypeParser("application/x-ndjson", (_request, payload, done) => {
        text(payload as Readable).then(
          (body) => done(null, body.trim().split("\n")),
          (error: Error) => done(error),
        );
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/echo", async (request) => ({ body: request.body }));
    });
    const plain = await send("/echo", {
      key: "k-text",
      headers: { "content-type": "text/plain" },
      body: "hi",
    });
    expect(plain.text()).toBe('{"body":"hi"}');
    const form = await send("/echo", {
      key: "k-form",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "item=apple&qty=2",
    });
    expect(form.text()).toBe('{"body":{"item":"apple","qty":"2"}}');
    const ndjson = await send("/echo", {
      key: "k-nd",
      headers: { "content-type": "application/x-ndjson" },
      body: "a\nb\n",
      chunked: true,
    });
    expect(ndjson.text()).toBe('{"body":["a","b"]}');
    const replay = await send("/echo", {
      key: "k-nd",
      headers: { "content-type": "application/x-ndjson" },
      body: "a\nb\n",
    });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
  });

  it("leaves request.raw readable for parsers that read it directly (as @fastify/multipart does)", async () => {
    const { options } = recording();
    const { send } = await serve(lib, async (app) => {
      app.addContentTypeParser("multipart/form-data", (_request, _payload, done) => done(null));
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/upload", async (request) => ({ raw: await text(request.raw) }));
    });
    const init = {
      key: "k-up",
      headers: { "content-type": "multipart/form-data; boundary=x" },
      body: "--x--",
    };
    expect((await send("/upload", init)).text()).toBe('{"raw":"--x--"}');
    expect((await send("/upload", { ...init, body: "--y--" })).status).toBe(422);
  });

  it("reads the decoded stream an earlier preParsing hook returns, and keeps its encoded length for Fastify", async () => {
    const { options } = recording();
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      app.addHook("preParsing", async (request, _reply, payload) => {
        if (request.headers["content-encoding"] !== "gzip") return payload;
        const decoded = Object.assign(createGunzip(), { receivedEncodedLength: 0 });
        payload.on("data", (chunk: Buffer) => {
          decoded.receivedEncodedLength += chunk.length;
        });
        payload.pipe(decoded);
        return decoded;
      });
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", async (request) => ({ run: ++runs, body: request.body }));
    });
    const json = '{"item":"apple"}';
    const gzip = { "content-type": "application/json", "content-encoding": "gzip" };
    const first = await send("/orders", { key: "k-gz", headers: gzip, body: gzipSync(json, { level: 1 }) });
    expect(first.text()).toBe('{"run":1,"body":{"item":"apple"}}');
    // The same JSON compressed otherwise is the same request: it is the decoded body that is fingerprinted.
    const again = await send("/orders", { key: "k-gz", headers: gzip, body: gzipSync(json, { level: 9 }) });
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(runs).toBe(1);
  });

  it("leaves a body above the route's bodyLimit to Fastify's 413, without claiming the key", async () => {
    const { options, store } = recording();
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/small", { bodyLimit: 10 }, async () => "ok");
    });
    const res = await send("/small", { key: "k-big", json: '{"item":"far too long"}' });
    expect(res.status).toBe(413);
    expect(store.totalCalls).toBe(0);
  });

  it("answers 413 problem+json above maxRequestBytes, before any store call, with the body still parsed", async () => {
    const { options, store } = recording({ maxRequestBytes: 8 });
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", async () => "ok");
    });
    const res = await send("/orders", { key: "k-413", json: '{"item":"apple"}' });
    expect(res.status).toBe(413);
    expect((res.json() as { type: string }).type).toBe(PROBLEM_TYPES.requestTooLarge);
    expect(store.totalCalls).toBe(0);
  });

  it("answers 413 at once when the declared Content-Length is above maxRequestBytes, without waiting for the body", async () => {
    const { options, store } = recording({ maxRequestBytes: 1024 });
    let runs = 0;
    const { url } = await serve(lib, async (app) => {
      // A bodyLimit far above maxRequestBytes, so that only the guard can refuse the request.
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", { bodyLimit: 64 * 1024 * 1024 }, async () => ({ run: ++runs }));
    });
    const { port } = new URL(url);
    // The client announces 10 MB and sends 16 bytes: the answer must not wait for the other 9.99 MB.
    const head = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), "127.0.0.1");
      let received = "";
      socket.on("data", (chunk) => {
        received += chunk.toString("latin1");
        if (received.includes("\r\n\r\n")) {
          socket.destroy();
          resolve(received);
        }
      });
      socket.on("error", reject);
      socket.on("close", () => resolve(received));
      socket.write(
        "POST /orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
          'Idempotency-Key: "k-declared"\r\nContent-Length: 10000000\r\n\r\n{"item":"apple",',
      );
    });
    expect(head.split("\r\n")[0]).toBe("HTTP/1.1 413 Payload Too Large");
    expect(head.toLowerCase()).toContain("content-type: application/problem+json");
    expect(store.totalCalls).toBe(0);
    expect(runs).toBe(0);
  });

  it("does not read the body when the fingerprint is off", async () => {
    const { options } = recording({ fingerprint: false });
    let runs = 0;
    const { send } = await serve(lib, async (app) => {
      await app.register(idempotency, { ...options, allRoutes: true });
      app.post("/orders", async (request) => ({ run: ++runs, body: request.body }));
    });
    expect((await send("/orders", { key: "k1", json: '{"a":1}' })).text()).toBe('{"run":1,"body":{"a":1}}');
    const other = await send("/orders", { key: "k1", json: '{"a":2}' });
    expect(other.headers["idempotent-replayed"]).toBe("true"); // without a fingerprint, the key alone decides
    expect(runs).toBe(1);
  });
});
