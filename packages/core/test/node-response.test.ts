import { once } from "node:events";
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createIdempotency, type IdempotencyEvent, MemoryStore } from "../src/index.js";
import { captureNodeResponse, nodeHeaders, splitRequestTarget } from "../src/node.js";

/** A MemoryStore whose `complete` answers only after a delay: a response that ends early is caught. */
class SlowCompleteStore extends MemoryStore {
  override async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number) {
    await new Promise((resolve) => setTimeout(resolve, 30));
    return super.complete(key, token, response, ttlMs);
  }
}

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: string;
  /** Whether the record was completed when the client had the response's last byte. */
  completedAtEnd: boolean;
}

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

/** A plain node:http server whose claimed responses go through captureNodeResponse. */
async function serve(
  handler: (
    req: IncomingMessage,
    res: ServerResponse,
    run: number,
    capture: (piped?: unknown) => void,
  ) => void,
  { captureFirst = true } = {},
) {
  const events: IdempotencyEvent[] = [];
  const engine = createIdempotency({
    store: new SlowCompleteStore(),
    scope: "global",
    onEvent: (event) => events.push(event),
  });
  let runs = 0;
  server = createServer((req, res) => {
    const { path, query } = splitRequestTarget(req.url ?? "/");
    const neutral = {
      method: req.method ?? "GET",
      path,
      query,
      headers: nodeHeaders(req.rawHeaders),
      body: async () => new Uint8Array(0),
      native: req,
    };
    void engine.handle(neutral).then((decision) => {
      if (decision.action === "respond") {
        res.writeHead(decision.response.status, decision.response.headers.flat());
        res.end(decision.response.body);
        return;
      }
      const capture = (piped?: unknown) => {
        if (decision.action === "execute") captureNodeResponse(res, decision.execution, piped);
      };
      if (captureFirst) capture();
      handler(req, res, ++runs, captureFirst ? () => {} : capture);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const send = (key: string) =>
    new Promise<Reply>((resolve, reject) => {
      const req = request(`${url}/`, { method: "POST", headers: { "idempotency-key": key }, agent: false });
      req.on("error", reject);
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => {
          const completedAtEnd = events.some((event) => event.type === "completed");
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, completedAtEnd });
        });
      });
      req.end();
    });
  return { send, events, url, runs: () => runs };
}

async function untilNoConnections(): Promise<void> {
  for (;;) {
    const count = await new Promise<number>((resolve, reject) =>
      server?.getConnections((error, n) => (error ? reject(error) : resolve(n))),
    );
    if (count === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe("captureNodeResponse", () => {
  it("stores what writeHead, write and end sent, and completes the record before the client has the end", async () => {
    const app = await serve((_req, res, run) => {
      res.writeHead(201, { "content-type": "text/plain", "x-run": String(run) });
      res.write("one ");
      res.end(`two ${run}`);
    });
    const first = await app.send("k1");
    expect([first.status, first.body, first.headers["x-run"]]).toEqual([201, "one two 1", "1"]);
    expect(first.completedAtEnd).toBe(true);
    const replay = await app.send("k1");
    expect([replay.status, replay.body, replay.headers["x-run"]]).toEqual([201, "one two 1", "1"]);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(app.runs()).toBe(1);
  });

  it("holds the head of a body-less response until the record is completed", async () => {
    const app = await serve((_req, res) => {
      res.writeHead(204);
      res.flushHeaders();
      res.end();
    });
    const first = await app.send("k-204");
    expect(first.status).toBe(204);
    expect(first.completedAtEnd).toBe(true);
    expect((await app.send("k-204")).headers["idempotent-replayed"]).toBe("true");
  });

  it.each([
    ["piped after the capture was installed", true],
    ["piped before the capture was installed, and passed to it", false],
  ])(
    "reads a stream %s to its end after the client left mid-way, and stores it",
    async (_how, captureFirst) => {
      let open!: () => void;
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const app = await serve(
        (_req, res, run, capture) => {
          res.setHeader("content-type", "text/plain");
          const body = Readable.from(
            (async function* () {
              yield `first ${run}\n`;
              if (run === 1) await gate;
              yield `second ${run}\n`;
            })(),
          );
          body.pipe(res);
          capture(body);
        },
        { captureFirst },
      );
      const req = request(`${app.url}/`, { method: "POST", headers: { "idempotency-key": "k-gone" } });
      req.on("error", () => {});
      req.end();
      const [response] = (await once(req, "response")) as [IncomingMessage];
      response.on("error", () => {}); // "aborted": the client leaves on purpose
      await once(response, "data");
      req.destroy();
      await new Promise((resolve) => response.once("close", resolve));
      await untilNoConnections(); // the server noticed the client leaving before the rest is produced
      open();
      while (!app.events.some((event) => event.type === "completed")) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      const retry = await app.send("k-gone");
      expect([retry.status, retry.body]).toEqual([200, "first 1\nsecond 1\n"]);
      expect(retry.headers["idempotent-replayed"]).toBe("true");
      expect(app.runs()).toBe(1);
    },
  );
});
