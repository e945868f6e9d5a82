import { once } from "node:events";
import { createServer, type IncomingMessage, request } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { IdempotencyRequestTooLargeError } from "../src/index.js";
import {
  drainAfterClose,
  groupHeaders,
  nodeHeaders,
  peekNodeBody,
  readNodeBody,
  splitRequestTarget,
} from "../src/node.js";

describe("nodeHeaders", () => {
  it("looks names up case-insensitively and joins repeated fields like WHATWG Headers", () => {
    const headers = nodeHeaders([
      "Idempotency-Key",
      "a",
      "Content-Type",
      "text/plain",
      "idempotency-key",
      "b",
    ]);
    expect(headers.get("IDEMPOTENCY-KEY")).toBe("a, b");
    expect(headers.get("content-type")).toBe("text/plain");
    expect(headers.get("x-missing")).toBeNull();
  });
});

describe("splitRequestTarget", () => {
  it.each([
    ["/orders", { path: "/orders", query: "" }],
    ["/api/orders?dry=1&x=%20", { path: "/api/orders", query: "dry=1&x=%20" }],
    ["/a?", { path: "/a", query: "" }],
    ["/a%20b?q=?", { path: "/a%20b", query: "q=?" }],
    ["http://example.com/p/q?x=1", { path: "/p/q", query: "x=1" }],
    // Never normalised: Express and Koa route on the raw path, so the record must too.
    ["http://127.0.0.1/zz/%2e%2e/orders", { path: "/zz/%2e%2e/orders", query: "" }],
    ["/zz/../orders", { path: "/zz/../orders", query: "" }],
    ["https://user@h:8080?x=1", { path: "/", query: "x=1" }],
    ["http://h", { path: "/", query: "" }],
    // A fragment is part of neither the path nor the query.
    ["/orders?a=1#frag", { path: "/orders", query: "a=1" }],
    ["/orders#frag?a=1", { path: "/orders", query: "" }],
    ["http://h/p#x", { path: "/p", query: "" }],
    ["*", { path: "*", query: "" }],
  ])("splits %s", (target, expected) => {
    expect(splitRequestTarget(target)).toEqual(expected);
  });
});

describe("readNodeBody", () => {
  let server: ReturnType<typeof createServer> | undefined;
  afterEach(() => {
    server?.close();
  });

  /** Sends `chunks` (chunked encoding) to a real server and gives the handler the IncomingMessage. */
  async function withRequest<T>(chunks: string[], handle: (req: IncomingMessage) => Promise<T>): Promise<T> {
    let result: Promise<T> | undefined;
    server = createServer((req, res) => {
      result = handle(req);
      result.finally(() => res.end("done")).catch(() => {});
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const client = request({ port, method: "POST", path: "/" });
    for (const chunk of chunks) client.write(chunk);
    client.end();
    const [response] = (await once(client, "response")) as [IncomingMessage];
    response.resume();
    await once(response, "end");
    return result as Promise<T>;
  }

  it("reads every chunk of the body", async () => {
    const body = await withRequest(["hello ", "world"], (req) => readNodeBody(req, 100));
    expect(body.toString()).toBe("hello world");
  });

  it("rejects as soon as more than maxBytes arrived, and the exchange still completes", async () => {
    const error = await withRequest(["12345", "67890", "abc"], (req) => readNodeBody(req, 8)).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(IdempotencyRequestTooLargeError);
    expect(error).toMatchObject({ code: "ERR_IDEMPOTENCY_REQUEST_TOO_LARGE", limit: 8 });
  });

  it("accepts a body of exactly maxBytes", async () => {
    const body = await withRequest(["1234", "5678"], (req) => readNodeBody(req, 8));
    expect(body.toString()).toBe("12345678");
  });
});

describe("peekNodeBody", () => {
  let server: ReturnType<typeof createServer> | undefined;
  afterEach(() => {
    server?.close();
  });

  interface Seen {
    peeked: string;
    /** What a later reader (a body parser) got from the stream. */
    after: string;
    /** Whether the source was watched (no read, no rearm) rather than read and rearmed. */
    watched: boolean;
  }

  /**
   * A real server whose handler peeks at the body (`before` runs first, e.g. to pause the request), then
   * reads the stream to its end as a body parser would. `send` writes the request.
   */
  async function peek(
    send: (client: ReturnType<typeof request>) => void,
    headers: Record<string, string | number>,
    before: (req: IncomingMessage) => void = () => {},
  ): Promise<Seen> {
    let result: Promise<Seen> | undefined;
    server = createServer((req, res) => {
      before(req);
      result = (async () => {
        const pending = peekNodeBody(req, 1 << 20);
        const watched = req.push !== Readable.prototype.push;
        const peeked = (await pending).toString();
        let after = "";
        for await (const chunk of req) after += chunk;
        return { peeked, after, watched };
      })();
      result.finally(() => res.end("done")).catch(() => {});
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const client = request({ port, method: "POST", path: "/", headers });
    send(client);
    const [response] = (await once(client, "response")) as [IncomingMessage];
    response.resume();
    await once(response, "end");
    return result as Promise<Seen>;
  }

  it("watches a small body with a Content-Length arrive, leaving the stream unread for the next reader", async () => {
    const body = JSON.stringify({ item: "apple", pad: "x".repeat(2000) });
    const seen = await peek((client) => client.end(body), { "content-length": Buffer.byteLength(body) });
    expect(seen).toEqual({ peeked: body, after: body, watched: true });
  });

  it("watches a body that arrives in several packets", async () => {
    const seen = await peek(
      (client) => {
        client.write("hello ");
        setTimeout(() => client.end("world"), 20);
      },
      { "content-length": 11 },
    );
    expect(seen).toEqual({ peeked: "hello world", after: "hello world", watched: true });
  });

  it("reads and rearms a chunked body", async () => {
    const seen = await peek(
      (client) => {
        client.write("hello ");
        client.end("world");
      },
      { "transfer-encoding": "chunked" },
    );
    expect(seen).toEqual({ peeked: "hello world", after: "hello world", watched: false });
  });

  it("reads and rearms a body at or above the stream's high-water mark", async () => {
    const body = "y".repeat(64 * 1024);
    const seen = await peek((client) => client.end(body), { "content-length": body.length });
    expect(seen).toEqual({ peeked: body, after: body, watched: false });
  });

  it("reads and rearms a request an earlier middleware paused", async () => {
    const seen = await peek(
      (client) => client.end("paused body"),
      { "content-length": 11 },
      (req) => req.pause(),
    );
    expect(seen).toEqual({ peeked: "paused body", after: "paused body", watched: false });
  });

  it("refuses a declared length above maxBytes before reading anything", async () => {
    let error: unknown;
    server = createServer((req, res) => {
      peekNodeBody(req, 4).then(
        () => res.end("read"),
        (caught: unknown) => {
          error = caught;
          res.end("refused");
        },
      );
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const client = request({ port, method: "POST", path: "/", headers: { "content-length": 10 } });
    client.end("0123456789");
    const [response] = (await once(client, "response")) as [IncomingMessage];
    response.resume();
    await once(response, "end");
    expect(error).toBeInstanceOf(IdempotencyRequestTooLargeError);
  });

  it("rejects when the client leaves before the whole body arrived, and stops watching", async () => {
    let req: IncomingMessage | undefined;
    let watching!: (peek: { settled: Promise<unknown> }) => void;
    // Set once the server has the request (not after a fixed wait: a loaded machine may take longer). Wrapped,
    // since resolving with a promise would wait for that promise.
    const watched = new Promise<{ settled: Promise<unknown> }>((resolve) => {
      watching = resolve;
    });
    server = createServer((incoming) => {
      req = incoming;
      watching({ settled: peekNodeBody(incoming, 1 << 20).catch((caught: unknown) => caught) });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const client = request({ port, method: "POST", path: "/", headers: { "content-length": 100 } });
    client.on("error", () => {});
    client.write("only part");
    const { settled } = await watched;
    client.destroy();
    const error = await settled;
    expect(error).toMatchObject({ code: "ERR_IDEMPOTENCY_REQUEST_ABORTED" });
    expect((req as IncomingMessage).push).toBe(Readable.prototype.push);
  });
});

describe("drainAfterClose", () => {
  it("does nothing for a body that is not a stream with something left to read", async () => {
    const ended = Readable.from([]);
    ended.resume();
    await once(ended, "end");
    const execution = { write: () => new Uint8Array(), end: async () => new Uint8Array() } as never;
    expect(drainAfterClose("text", execution)).toBe(false);
    expect(drainAfterClose(ended, execution)).toBe(false);
  });

  it("reads the rest into the execution, holds off destroy until the end, then ends the execution", async () => {
    const written: string[] = [];
    let ended = false;
    const execution = {
      write: (chunk: Uint8Array) => {
        written.push(Buffer.from(chunk).toString());
        return chunk;
      },
      end: async () => {
        ended = true;
        return new Uint8Array();
      },
      abandon: async () => {},
    } as never;
    const body = Readable.from(["a", "b", "c"]);
    expect(drainAfterClose(body, execution)).toBe(true);
    body.destroy(); // what the framework does when the response closes: held off
    await once(body, "end");
    await new Promise((resolve) => setImmediate(resolve));
    expect(written).toEqual(["a", "b", "c"]);
    expect(ended).toBe(true);
  });
});

describe("groupHeaders", () => {
  it("gives one value as a string and a repeated name as its values in order", () => {
    const grouped = groupHeaders([
      ["content-type", "application/json"],
      ["link", "</a>; rel=preload"],
      ["vary", "accept"],
      ["link", "</b>; rel=preload"],
      ["link", "</c>; rel=preload"],
    ]);
    expect([...grouped]).toEqual([
      ["content-type", "application/json"],
      ["link", ["</a>; rel=preload", "</b>; rel=preload", "</c>; rel=preload"]],
      ["vary", "accept"],
    ]);
  });
});
