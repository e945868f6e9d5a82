import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request as rawRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pipeline, Readable } from "node:stream";
import { httpRequest } from "@idempotency/binding-tests";
import { instrumentedStore } from "@idempotency/core/testing";
import express from "express";
import express4 from "express4";
import { afterEach, describe, expect, it } from "vitest";
import { idempotency } from "../src/index.js";
import { recordingOptions, untilNoConnections } from "./support.js";
import { type ExpressModule, listen } from "./table-app.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

describe.each([
  ["express 5", express],
  ["express 4", express4],
] as Array<[string, ExpressModule]>)("%s response capture", (_name, lib) => {
  async function serve(
    setup: (app: ReturnType<ExpressModule>, guard: ReturnType<typeof idempotency>) => void,
    overrides = {},
  ) {
    const recorded = recordingOptions(overrides);
    const app = lib();
    setup(app, idempotency(recorded.options));
    const running = await listen(app);
    closers.push(running.close);
    const send = (path: string, key: string) => httpRequest(`${running.url}${path}`, { key });
    return { ...recorded, send, url: running.url, server: running.server };
  }

  for (const how of ["pipe", "pipeline"] as const) {
    it(`reads a stream piped with ${how}() to its end after the client left mid-way, and stores it`, async () => {
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let runs = 0;
      const { events, url, server } = await serve((app, guard) => {
        app.post("/stream", guard, (_req, res) => {
          const run = ++runs;
          res.type("text/plain");
          const body = Readable.from(
            (async function* () {
              yield `first ${run}\n`;
              if (run === 1) await gate;
              yield `second ${run}\n`;
            })(),
          );
          if (how === "pipe") body.pipe(res);
          else pipeline(body, res, () => {});
        });
      });
      const received: Buffer[] = [];
      const req = rawRequest(`${url}/stream`, {
        method: "POST",
        headers: { "idempotency-key": `k-${how}`, "content-length": "0" },
      });
      req.on("error", () => {});
      req.on("response", (res) => res.on("data", (chunk: Buffer) => received.push(chunk)));
      req.end();
      await until(() => received.length > 0);
      req.destroy();
      await untilNoConnections(server); // the server noticed the client leaving
      release();
      await until(() => events.some((event) => event.type === "completed"));
      expect(Buffer.concat(received).toString()).toBe("first 1\n");
      const retry = await httpRequest(`${url}/stream`, { key: `k-${how}` });
      expect([retry.status, retry.text()]).toEqual([200, "first 1\nsecond 1\n"]);
      expect(retry.headers["idempotent-replayed"]).toBe("true");
      expect(runs).toBe(1);
      expect(events.map((event) => event.type)).toEqual(["claimed", "completed", "replayed"]);
    });
  }

  it("captures writeHead with a header object, a flat list with repeats, and a reason phrase", async () => {
    const { send } = await serve((app, guard) => {
      app.post("/object", guard, (_req, res) => {
        res.writeHead(201, { "content-type": "text/plain", "x-object": "1" }).end("object");
      });
      app.post("/list", guard, (_req, res) => {
        res.setHeader("x-multi", "replaced");
        res.writeHead(200, ["x-multi", "a", "x-multi", "b", "content-type", "text/plain"]).end("list");
      });
      app.post("/reason", guard, (_req, res) => {
        res.writeHead(202, "Queued Up", { "content-type": "text/plain" }).end("reason");
      });
    });
    const object = await send("/object", "k-object");
    expect([object.status, object.headers["x-object"], object.text()]).toEqual([201, "1", "object"]);
    const objectReplay = await send("/object", "k-object");
    expect([objectReplay.status, objectReplay.headers["x-object"], objectReplay.text()]).toEqual([
      201,
      "1",
      "object",
    ]);
    expect(objectReplay.headers["idempotent-replayed"]).toBe("true");

    const list = await send("/list", "k-list");
    expect(list.rawHeaders.filter(([name]) => name.toLowerCase() === "x-multi")).toEqual([
      ["x-multi", "a"],
      ["x-multi", "b"],
    ]);
    const listReplay = await send("/list", "k-list");
    expect(
      listReplay.rawHeaders.filter(([name]) => name.toLowerCase() === "x-multi").map(([, v]) => v),
    ).toEqual(["a", "b"]);
    expect(listReplay.text()).toBe("list");

    const reason = await send("/reason", "k-reason");
    expect(reason.status).toBe(202);
    expect(reason.text()).toBe("reason");
    expect((await send("/reason", "k-reason")).headers["idempotent-replayed"]).toBe("true");
  });

  it("captures headers set after writeHead and before the first bytes", async () => {
    const { send } = await serve((app, guard) => {
      app.post("/late", guard, (_req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        res.setHeader("x-after-head", "yes");
        res.end("late");
      });
    });
    const first = await send("/late", "k-late");
    expect(first.headers["x-after-head"]).toBe("yes");
    const replay = await send("/late", "k-late");
    expect(replay.headers["x-after-head"]).toBe("yes");
    expect(replay.text()).toBe("late");
  });

  it("defers flushHeaders until the first bytes and replays the streamed body", async () => {
    const { send } = await serve((app, guard) => {
      app.post("/flush", guard, (_req, res) => {
        res.setHeader("content-type", "text/plain");
        res.flushHeaders();
        expect(res.headersSent).toBe(false);
        res.write("first,");
        expect(res.headersSent).toBe(true);
        res.end("second");
      });
    });
    const first = await send("/flush", "k-flush");
    expect(first.text()).toBe("first,second");
    const replay = await send("/flush", "k-flush");
    expect(replay.text()).toBe("first,second");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
  });

  it("holds back the last byte of a Content-Length body until the record is completed", async () => {
    const store = instrumentedStore();
    store.delays.complete = 50;
    const { send, events, url } = await serve(
      (app, guard) => {
        app.post("/sized", guard, (_req, res) => {
          res.setHeader("content-type", "application/octet-stream");
          res.setHeader("content-length", "6");
          res.write(Buffer.from("abc"));
          res.write(Buffer.from("def"));
          res.end();
        });
      },
      { store },
    );
    let completedAtEnd: boolean | undefined;
    const sized = await httpRequest(`${url}/sized`, {
      key: "k-sized",
      onEnd: () => {
        completedAtEnd = events.some((event) => event.type === "completed");
      },
    });
    expect(sized.text()).toBe("abcdef");
    expect(sized.headers["content-length"]).toBe("6");
    expect(completedAtEnd).toBe(true);
    const replay = await send("/sized", "k-sized");
    expect(replay.text()).toBe("abcdef");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
  });

  it("does not show a body-less response before the record is completed", async () => {
    const store = instrumentedStore();
    store.delays.complete = 50;
    const { send } = await serve(
      (app, guard) => {
        app.post("/accepted", guard, (_req, res) => {
          res.writeHead(204).end();
        });
      },
      { store },
    );
    const first = await send("/accepted", "k-204");
    const retry = await send("/accepted", "k-204");
    expect(first.status).toBe(204);
    expect(retry.status).toBe(204);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
  });

  it("captures strings in any encoding as the bytes sent", async () => {
    const { send } = await serve((app, guard) => {
      app.post("/encodings", guard, (_req, res) => {
        res.setHeader("content-type", "application/octet-stream");
        res.write("ff00", "hex");
        res.write("é", "latin1");
        res.end("AQI=", "base64");
      });
    });
    const expected = Buffer.from([0xff, 0x00, 0xe9, 0x01, 0x02]);
    expect((await send("/encodings", "k-enc")).body.equals(expected)).toBe(true);
    expect((await send("/encodings", "k-enc")).body.equals(expected)).toBe(true);
  });

  it("replays a file sent with res.sendFile byte for byte", async () => {
    const dir = await mkdtemp(join(tmpdir(), "idempotency-express-"));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, "report.bin");
    const content = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 17 + 3) & 255));
    await writeFile(file, content);
    const { send } = await serve((app, guard) => {
      app.post("/file", guard, (_req, res) => res.sendFile(file));
    });
    const first = await send("/file", "k-file");
    expect(first.status).toBe(200);
    expect(first.body.equals(content)).toBe(true);
    const replay = await send("/file", "k-file");
    expect(replay.body.equals(content)).toBe(true);
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.headers["content-length"]).toBe("200000");
  });

  it("replays every value of a re-admitted repeated header", async () => {
    const { send } = await serve(
      (app, guard) => {
        app.post("/cookies", guard, (_req, res) => {
          res.setHeader("set-cookie", ["a=1", "b=2"]);
          res.status(201).end();
        });
      },
      { replayHeaders: { allow: ["set-cookie"] } },
    );
    expect((await send("/cookies", "k-cookies")).headers["set-cookie"]).toEqual(["a=1", "b=2"]);
    const replay = await send("/cookies", "k-cookies");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.headers["set-cookie"]).toEqual(["a=1", "b=2"]);
  });
});

describe("express 5 with an outer response-transforming middleware", () => {
  it("stores the plain body when a gzip wrapper is mounted before the middleware, and replays through it", async () => {
    const { gunzipSync, createGzip } = await import("node:zlib");
    const { decodeResponse } = await import("@idempotency/core");
    const recorded = recordingOptions();
    const app = express();
    // A minimal stand-in for compression(): wraps write/end and gzips everything that passes.
    app.use((_req, res, next) => {
      const gzip = createGzip();
      const write = res.write.bind(res) as (chunk: Buffer) => boolean;
      const end = res.end.bind(res) as () => void;
      gzip.on("data", (chunk: Buffer) => write(chunk));
      gzip.on("end", () => end());
      res.write = ((chunk: string | Buffer) => {
        if (!res.getHeader("content-encoding")) {
          res.setHeader("content-encoding", "gzip");
          res.removeHeader("content-length");
        }
        return gzip.write(chunk);
      }) as typeof res.write;
      res.end = ((chunk?: string | Buffer) => {
        if (!res.getHeader("content-encoding")) {
          res.setHeader("content-encoding", "gzip");
          res.removeHeader("content-length");
        }
        if (chunk !== undefined && typeof chunk !== "function") gzip.end(chunk);
        else gzip.end();
        return res;
      }) as typeof res.end;
      next();
    });
    let runs = 0;
    app.post("/report", idempotency(recorded.options), (_req, res) => {
      runs++;
      res.type("text/plain").send("a plain report body");
    });
    const running = await listen(app);
    closers.push(running.close);
    const first = await httpRequest(`${running.url}/report`, { key: "k-gzip" });
    expect(first.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(first.body).toString()).toBe("a plain report body");

    const claimed = recorded.events.find((event) => event.type === "claimed");
    const record = await recorded.store.get(claimed?.key as string);
    expect(record?.state).toBe("completed");
    const stored = decodeResponse((record as { response: Uint8Array }).response);
    expect(Buffer.from(stored.body as Uint8Array).toString()).toBe("a plain report body");
    expect(stored.headers.some(([name]) => name === "content-encoding")).toBe(false);

    const replay = await httpRequest(`${running.url}/report`, { key: "k-gzip" });
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(replay.body).toString()).toBe("a plain report body");
    expect(runs).toBe(1);
  });
});

async function until(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
