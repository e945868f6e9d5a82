import { Agent, request as rawRequest } from "node:http";
import { httpRequest } from "@idempotency/binding-tests";
import type { IdempotencyOptions } from "@idempotency/core";
import express from "express";
import express4 from "express4";
import { afterEach, describe, expect, it, vi } from "vitest";
import { idempotency } from "../src/index.js";
import { claimedFingerprint, recordingOptions, untilNoConnections } from "./support.js";
import { type ExpressModule, listen } from "./table-app.js";

type Placement = "none" | "parser after" | "parser before" | "parser before, verify keeps rawBody";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

function keepRawBody(req: { rawBody?: Buffer }, _res: unknown, buffer: Buffer): void {
  req.rawBody = buffer;
}

describe.each([
  ["express 5", express],
  ["express 4", express4],
] as Array<[string, ExpressModule]>)("%s request body", (_name, lib) => {
  type Parser = "json" | "raw" | "text";
  function parser(kind: Parser, verify: boolean) {
    const options = verify ? { verify: keepRawBody as never, type: () => true } : { type: () => true };
    return kind === "json" ? lib.json(options) : kind === "raw" ? lib.raw(options) : lib.text(options);
  }

  /** One app per placement; returns the stored fingerprint and what the handler saw. */
  async function fingerprintWith(
    placement: Placement,
    kind: Parser,
    body: { contentType: string; bytes: Buffer },
    overrides: Partial<IdempotencyOptions> = {},
  ) {
    const { options, store, events } = recordingOptions(overrides);
    const app = lib();
    const guard = idempotency(options);
    const chain =
      placement === "none"
        ? [guard]
        : placement === "parser after"
          ? [guard, parser(kind, false)]
          : [parser(kind, placement === "parser before, verify keeps rawBody"), guard];
    app.post("/things", ...chain, async (req, res) => {
      if (placement === "none") {
        const chunks: Buffer[] = [];
        for await (const chunk of req) chunks.push(chunk as Buffer);
        res.status(201).type("application/octet-stream").send(Buffer.concat(chunks));
      } else if (kind === "json") {
        res.status(201).json(req.body);
      } else {
        res.status(201).type("application/octet-stream").send(Buffer.from(req.body));
      }
    });
    const running = await listen(app);
    closers.push(running.close);
    const res = await httpRequest(`${running.url}/things`, {
      key: "k-body",
      headers: { "content-type": body.contentType },
      body: body.bytes,
    });
    return { res, fingerprint: await claimedFingerprint(store, events), url: running.url };
  }

  const placements: Placement[] = [
    "none",
    "parser after",
    "parser before",
    "parser before, verify keeps rawBody",
  ];

  it("fingerprints a JSON body the same with express.json() before it, after it, or no parser", async () => {
    const bytes = Buffer.from('{ "b": [1, 2.5, {"y": null, "x": "\\u0041"}],\n  "a": "é" }');
    const seen = [];
    for (const placement of placements) {
      const { res, fingerprint } = await fingerprintWith(placement, "json", {
        contentType: "application/json",
        bytes,
      });
      expect(res.status).toBe(201);
      if (placement === "none") expect(res.body.equals(bytes)).toBe(true);
      else expect(res.json()).toEqual({ a: "é", b: [1, 2.5, { x: "A", y: null }] });
      seen.push(fingerprint);
    }
    expect(new Set(seen).size).toBe(1);
  });

  it("fingerprints raw bytes the same with express.raw() before it, after it, or no parser", async () => {
    const bytes = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 11) & 255));
    const seen = [];
    for (const placement of placements) {
      const { res, fingerprint } = await fingerprintWith(placement, "raw", {
        contentType: "application/octet-stream",
        bytes,
      });
      expect(res.status).toBe(201);
      expect(res.body.equals(bytes)).toBe(true);
      seen.push(fingerprint);
    }
    expect(new Set(seen).size).toBe(1);
  });

  it("fingerprints a UTF-8 text body the same with express.text() before it, after it, or no parser", async () => {
    const bytes = Buffer.from("héllo wörld\n");
    const seen = [];
    for (const placement of placements) {
      const { res, fingerprint } = await fingerprintWith(placement, "text", {
        contentType: "text/plain; charset=utf-8",
        bytes,
      });
      expect(res.status).toBe(201);
      expect(res.body.equals(bytes)).toBe(true);
      seen.push(fingerprint);
    }
    expect(new Set(seen).size).toBe(1);
  });

  it("keeps every digit of a JSON number when the middleware reads the body, or a verify hook kept req.rawBody", async () => {
    for (const placement of ["none", "parser after", "parser before, verify keeps rawBody"] as const) {
      const a = await fingerprintWith(placement, "json", {
        contentType: "application/json",
        bytes: Buffer.from('{"qty":9007199254740993}'),
      });
      const b = await fingerprintWith(placement, "json", {
        contentType: "application/json",
        bytes: Buffer.from('{"qty":9007199254740992}'),
      });
      expect(a.fingerprint).not.toBe(b.fingerprint);
    }
  });

  it("documented caveat: after express.json() without rawBody, the fingerprint sees the parsed value", async () => {
    const a = await fingerprintWith("parser before", "json", {
      contentType: "application/json",
      bytes: Buffer.from('{"qty":9007199254740993}'),
    });
    const b = await fingerprintWith("parser before", "json", {
      contentType: "application/json",
      bytes: Buffer.from('{"qty":9007199254740992}'),
    });
    expect(a.fingerprint).toBe(b.fingerprint);
  });

  it("leaves the body readable for every parser and for a handler reading the stream itself", async () => {
    const { options } = recordingOptions();
    const app = lib();
    const guard = idempotency(options);
    app.post("/json", guard, lib.json(), (req, res) => res.json({ parsed: req.body }));
    app.post("/raw", guard, lib.raw(), (req, res) => res.type("application/octet-stream").send(req.body));
    app.post("/text", guard, lib.text(), (req, res) => res.type("text/plain").send(`[${req.body}]`));
    app.post("/form", guard, lib.urlencoded({ extended: false }), (req, res) => res.json(req.body));
    app.post("/stream", guard, async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      res.type("application/octet-stream").send(Buffer.concat(chunks));
    });
    const running = await listen(app);
    closers.push(running.close);
    const post = (path: string, contentType: string, body: string | Buffer, key: string) =>
      httpRequest(`${running.url}${path}`, { key, headers: { "content-type": contentType }, body });

    const json = await post("/json", "application/json", '{"item":"apple"}', "k-json");
    expect(json.json()).toEqual({ parsed: { item: "apple" } });
    const big = Buffer.from(Array.from({ length: 1_048_576 }, (_, i) => (i * 31) & 255));
    const raw = await post("/raw", "application/octet-stream", big.subarray(0, 50_000), "k-raw");
    expect(raw.body.equals(big.subarray(0, 50_000))).toBe(true);
    expect((await post("/text", "text/plain", "plain words", "k-text")).text()).toBe("[plain words]");
    const form = await post("/form", "application/x-www-form-urlencoded", "a=1&b=two+words", "k-form");
    expect(form.json()).toEqual({ a: "1", b: "two words" });
    const streamed = await post("/stream", "application/octet-stream", big, "k-stream");
    expect(streamed.status).toBe(200);
    expect(streamed.body.equals(big)).toBe(true);
    const replay = await post("/stream", "application/octet-stream", big, "k-stream");
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.body.equals(big)).toBe(true);
  });

  it("answers 400 request-aborted and claims nothing when the client aborts while sending the body: a full retry runs", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    let runs = 0;
    const errors: string[] = [];
    const responses: express.Response[] = [];
    app.use((_req, res, next) => {
      responses.push(res);
      next();
    });
    app.post("/upload", idempotency(options), lib.raw(), (req, res) => {
      runs++;
      res.status(201).json({ bytes: (req.body as Buffer).length });
    });
    app.use((error: Error, _req: unknown, res: express.Response, _next: express.NextFunction) => {
      errors.push(error.message);
      res.status(400).end();
    });
    const running = await listen(app);
    closers.push(running.close);
    await new Promise<void>((resolve) => {
      const req = rawRequest(`${running.url}/upload`, {
        method: "POST",
        agent: false,
        headers: {
          "idempotency-key": "k-upload",
          "content-type": "application/octet-stream",
          "content-length": "100",
        },
      });
      req.on("error", () => resolve());
      req.write(Buffer.alloc(10, 1), () => setImmediate(() => req.destroy()));
    });
    await untilNoConnections(running.server);
    // The middleware answers 400 request-aborted itself (to nobody): the stream error never reaches the app.
    await vi.waitFor(() => expect(responses[0]?.writableEnded).toBe(true));
    expect(responses[0]?.statusCode).toBe(400);
    expect(errors).toEqual([]);
    expect(runs).toBe(0);
    expect(events).toEqual([]);
    const full = await httpRequest(`${running.url}/upload`, {
      key: "k-upload",
      headers: { "content-type": "application/octet-stream" },
      body: Buffer.alloc(100, 1),
    });
    expect(full.status).toBe(201);
    expect(full.json()).toEqual({ bytes: 100 });
    expect(runs).toBe(1);
  });

  it("keeps re-armed bodies apart on a keep-alive connection", async () => {
    const { options } = recordingOptions();
    const app = lib();
    app.post("/echo", idempotency(options), lib.json(), (req, res) => {
      res.status(201).json(req.body);
    });
    const running = await listen(app);
    closers.push(running.close);
    let connections = 0;
    (running.server as import("node:http").Server).on("connection", () => connections++);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    closers.push(async () => agent.destroy());
    const post = (key: string, json: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = rawRequest(
          `${running.url}/echo`,
          { method: "POST", agent, headers: { "idempotency-key": key, "content-type": "application/json" } },
          (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (chunk: string) => {
              body += chunk;
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
          },
        );
        req.on("error", reject);
        req.end(json);
      });
    for (let i = 0; i < 5; i++) {
      const res = await post(`k-alive-${i}`, JSON.stringify({ n: i, pad: "x".repeat(i * 5000) }));
      expect(res.status).toBe(201);
      expect(JSON.parse(res.body)).toEqual({ n: i, pad: "x".repeat(i * 5000) });
    }
    const replay = await post("k-alive-3", JSON.stringify({ n: 3, pad: "x".repeat(15000) }));
    expect(JSON.parse(replay.body)).toEqual({ n: 3, pad: "x".repeat(15000) });
    expect(connections).toBe(1);
  });

  it("reads a body that an earlier middleware paused, and leaves it readable", async () => {
    const { options, store, events } = recordingOptions();
    const app = lib();
    app.use((req, _res, next) => {
      req.pause();
      next();
    });
    app.post("/paused", idempotency(options), lib.json(), (req, res) => {
      res.status(201).json(req.body);
    });
    const running = await listen(app);
    closers.push(running.close);
    const a = await httpRequest(`${running.url}/paused`, { key: "k-paused", json: '{"item":"apple"}' });
    expect(a.json()).toEqual({ item: "apple" });
    const fingerprint = await claimedFingerprint(store, events);
    const other = await httpRequest(`${running.url}/paused`, { key: "k-paused", json: '{"item":"pear"}' });
    expect(other.status).toBe(422);
    expect(fingerprint.startsWith("xxh3-128:")).toBe(true);
  });

  it("does not touch the body stream when the fingerprint does not need it", async () => {
    const { options } = recordingOptions({ fingerprint: false });
    const app = lib();
    app.post("/untouched", idempotency(options), (req, res) => {
      res.json({ didRead: req.readableDidRead, flowing: req.readableFlowing });
    });
    const running = await listen(app);
    closers.push(running.close);
    const res = await httpRequest(`${running.url}/untouched`, { key: "k-untouched", json: '{"a":1}' });
    expect(res.json()).toEqual({ didRead: false, flowing: null });
  });

  it("refuses with IdempotencyBodyConsumedError when an earlier middleware read the body and kept nothing", async () => {
    const { options, events } = recordingOptions();
    const app = lib();
    const errors: unknown[] = [];
    app.use(async (req, _res, next) => {
      for await (const _chunk of req) {
        // drains the stream and keeps nothing, as a logging or signature middleware might
      }
      next();
    });
    app.post("/consumed", idempotency(options), (_req, res) => {
      res.status(201).send("never");
    });
    app.use(
      (
        error: unknown,
        _req: unknown,
        res: { status(n: number): { send(t: string): void } },
        _next: unknown,
      ) => {
        errors.push(error);
        res.status(500).send("handled");
      },
    );
    const running = await listen(app);
    closers.push(running.close);
    const res = await httpRequest(`${running.url}/consumed`, { key: "k-consumed", json: '{"a":1}' });
    expect([res.status, res.text()]).toEqual([500, "handled"]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: "ERR_IDEMPOTENCY_BODY_CONSUMED" });
    expect((errors[0] as Error).message).toContain(
      "Mount idempotency() before the middleware that reads the body",
    );
    expect(events).toEqual([]); // nothing was claimed
  });
});
