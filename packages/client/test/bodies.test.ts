/**
 * Request bodies are read once and the same bytes resent on every attempt, whatever their kind, so the
 * server's fingerprint matches and the retry is replayed; bodies that cannot be read are refused before
 * anything is sent. The server is Express with @idempotency/express behind a proxy that loses the first
 * response.
 */
import { afterEach, describe, expect, it } from "vitest";
import { IdempotentFetchBodyError, idempotentFetch } from "../src/index.js";
import { fakeClock, flakyProxy, ordersServer, type Running } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((running) => running.close()));
});

/** A server and a proxy in front of it that loses the first response (after the server ran). */
async function lossyUploads() {
  const server = await ordersServer();
  const proxy = await flakyProxy(server.port, ["lose-response"]);
  open.push(server, proxy);
  return { server, proxy, url: `${proxy.url}/uploads` };
}

const encoder = new TextEncoder();

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const part of parts) controller.enqueue(encoder.encode(part));
      controller.close();
    },
  });
}

describe("bodies are buffered once and resent byte for byte", () => {
  it("a ReadableStream body (no duplex option needed)", async () => {
    const { server, proxy, url } = await lossyUploads();
    const response = await idempotentFetch(
      url,
      {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: streamOf("chunk one, ", "chunk two"),
      },
      fakeClock().options,
    );
    expect([response.status, response.replayed, response.attempts]).toEqual([201, true, 2]);
    expect(await response.json()).toEqual({ id: 1, contentType: "text/plain", length: 20 });
    expect(proxy.bodies.map(String)).toEqual(["chunk one, chunk two", "chunk one, chunk two"]);
    expect(server.executions()).toBe(1);
  });

  it("an async iterable body (a Node.js stream, which Node's fetch accepts)", async () => {
    const { proxy, url } = await lossyUploads();
    async function* parts() {
      yield encoder.encode("from ");
      yield encoder.encode("a generator");
    }
    const response = await idempotentFetch(
      url,
      { method: "POST", body: parts() as never },
      fakeClock().options,
    );
    expect([response.status, response.replayed]).toEqual([201, true]);
    expect(proxy.bodies.map(String)).toEqual(["from a generator", "from a generator"]);
  });

  it("FormData keeps one multipart boundary on every attempt (a new one would change the fingerprint: 422)", async () => {
    const { server, proxy, url } = await lossyUploads();
    const form = new FormData();
    form.append("name", "report");
    form.append("file", new Blob(["a,b\n1,2\n"], { type: "text/csv" }), "report.csv");
    const response = await idempotentFetch(url, { method: "POST", body: form }, fakeClock().options);
    expect([response.status, response.replayed, response.attempts]).toEqual([201, true, 2]);
    const { contentType } = (await response.json()) as { contentType: string };
    expect(contentType).toMatch(/^multipart\/form-data; boundary=/);
    expect(proxy.bodies[0]!.equals(proxy.bodies[1]!)).toBe(true);
    expect(proxy.bodies[0]!.toString()).toContain(contentType.slice(contentType.indexOf("=") + 1));
    expect(server.executions()).toBe(1);
  });

  it("bytes, Blob and URLSearchParams bodies", async () => {
    const cases: Array<[BodyInit, string]> = [
      [encoder.encode("raw bytes"), "raw bytes"],
      [new Blob(["a blob"]), "a blob"],
      [new URLSearchParams({ q: "a b", n: "1" }), "q=a+b&n=1"],
    ];
    for (const [body, sent] of cases) {
      const { proxy, url } = await lossyUploads();
      const response = await idempotentFetch(url, { method: "POST", body }, fakeClock().options);
      expect([response.status, response.replayed]).toEqual([201, true]);
      expect(proxy.bodies.map(String)).toEqual([sent, sent]);
    }
  });

  it("a Request as input, with its body, method and headers", async () => {
    const { proxy, url } = await lossyUploads();
    const request = new Request(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-trace": "t-1" },
      body: streamOf('{"from":"a request"}'),
      duplex: "half",
    } as RequestInit);
    const response = await idempotentFetch(request, undefined, fakeClock().options);
    expect([response.status, response.replayed]).toEqual([201, true]);
    expect(await response.json()).toMatchObject({ contentType: "application/json" });
    expect(proxy.bodies.map(String)).toEqual(['{"from":"a request"}', '{"from":"a request"}']);
  });
});

describe("bodies that cannot be sent are refused before anything is sent", () => {
  it("a locked stream", async () => {
    const { proxy, url } = await lossyUploads();
    const body = streamOf("x");
    body.getReader();
    const error = await idempotentFetch(url, { method: "POST", body }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotentFetchBodyError);
    expect(error).toMatchObject({ code: "ERR_IDEMPOTENT_FETCH_BODY" });
    expect((error as Error).message).toBe(
      "The request body stream is locked or was already read, so it cannot be sent: pass a fresh stream, or the " +
        "body itself (a string, bytes, Blob or FormData).",
    );
    expect((error as Error).cause).toBeInstanceOf(TypeError);
    expect(proxy.connections()).toBe(0);
  });

  it("a Request whose body was already read", async () => {
    const { proxy, url } = await lossyUploads();
    const request = new Request(url, { method: "POST", body: "read already" });
    await request.text();
    const error = await idempotentFetch(request).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotentFetchBodyError);
    expect((error as Error).message).toContain("The Request's body was already read, so it cannot be sent");
    expect(proxy.connections()).toBe(0);
  });

  it("a stream that fails while it is read", async () => {
    const { proxy, url } = await lossyUploads();
    const failure = new Error("disk read failed");
    const body = new ReadableStream({
      pull(controller) {
        controller.error(failure);
      },
    });
    const error = await idempotentFetch(url, { method: "POST", body }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotentFetchBodyError);
    expect((error as Error).message).toBe(
      "Reading the request body failed, so nothing was sent: disk read failed",
    );
    expect((error as Error).cause).toBe(failure);
    expect(proxy.connections()).toBe(0);
  });

  it("other invalid input fails as fetch fails (a TypeError), not as a body error", async () => {
    await expect(idempotentFetch("not a url", { method: "POST" })).rejects.toThrow(TypeError);
    await expect(idempotentFetch("http://127.0.0.1:1/", { method: "GET", body: "x" })).rejects.toThrow(
      TypeError,
    );
  });
});
