import { describe, expect, it, vi } from "vitest";
import { encodeResponse, IdempotencyError, PROBLEM_TYPES } from "../src/index.js";
import { type Handler, send } from "./harness.js";
import { deferred, events, eventTypes, store, useEngineFixture } from "./support.js";

const engine = useEngineFixture();

/** A handler that counts executions and answers 201 with a JSON order. */
function orderHandler() {
  const handler = Object.assign(
    async (res: Parameters<Handler>[0]) => {
      handler.runs++;
      res.writeHead(201, { "content-type": "application/json", location: `/orders/${handler.runs}` });
      await res.end(JSON.stringify({ id: handler.runs }));
    },
    { runs: 0 },
  );
  return handler;
}

describe("which requests are protected", () => {
  it("passes GET and requests without a key straight through, without store I/O", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    const get = await send(idempotency, { method: "GET", key: "k1" }, handler);
    const noKey = await send(idempotency, { method: "POST" }, handler);
    expect(get.action).toBe("pass");
    expect(noKey.action).toBe("pass");
    expect(handler.runs).toBe(2);
    expect(store.totalCalls).toBe(0);
  });

  it("protects the configured methods only, whatever their case", async () => {
    const idempotency = engine({ methods: ["put"] });
    const handler = orderHandler();
    expect((await send(idempotency, { method: "PUT", key: "k" }, handler)).action).toBe("execute");
    expect((await send(idempotency, { method: "POST", key: "k" }, handler)).action).toBe("pass");
  });

  it("answers 400 missing-key when a key is required and absent, without running the handler", async () => {
    const idempotency = engine({ required: true });
    const handler = orderHandler();
    const { response } = await send(idempotency, {}, handler);
    expect(response.status).toBe(400);
    expect(response.headers["content-type"]).toBe("application/problem+json");
    expect(response.json()).toEqual({
      type: PROBLEM_TYPES.missingKey,
      title: "Idempotency key missing",
      status: 400,
      detail:
        "This request must carry an Idempotency-Key header: a unique value (for example a UUID) that you reuse " +
        "when you retry the same request.",
    });
    expect(handler.runs).toBe(0);
    expect(store.totalCalls).toBe(0);
  });

  it("reads the key from a custom header", async () => {
    const idempotency = engine({ header: "X-Request-Key", required: true });
    const handler = orderHandler();
    const first = await send(idempotency, { headers: { "x-request-key": "abc" } }, handler);
    const retry = await send(idempotency, { headers: { "X-REQUEST-KEY": "abc" } }, handler);
    expect(first.response.status).toBe(201);
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
    expect(handler.runs).toBe(1);
  });
});

describe("invalid keys", () => {
  const cases: Array<[string, string]> = [
    ["empty", ""],
    ["only spaces", "   "],
    ["an empty sf-string", '""'],
    ["256 characters", "k".repeat(256)],
    ["a comma-merged list (two header fields)", "abc, def"],
    ["two sf-strings", '"abc", "def"'],
    ["a control character", "ab\u0001c"],
    ["a non-ASCII character", "ключ"],
    ["an unterminated sf-string", '"abc'],
    ["a bad escape in an sf-string", '"a\\nb"'],
    ["a quote inside a raw key", 'ab"c'],
  ];

  for (const [name, key] of cases) {
    it(`answers 400 invalid-key for ${name}, before any store I/O`, async () => {
      const idempotency = engine();
      const handler = orderHandler();
      const { response } = await send(idempotency, { key }, handler);
      expect(response.status).toBe(400);
      const problem = response.json() as Record<string, unknown>;
      expect(problem.type).toBe(PROBLEM_TYPES.invalidKey);
      expect(problem.title).toBe("Invalid idempotency key");
      expect(problem.status).toBe(400);
      expect(String(problem.detail)).toMatch(/^Invalid Idempotency-Key header: /);
      expect(handler.runs).toBe(0);
      expect(store.totalCalls).toBe(0);
    });
  }

  it("accepts 255 characters, an sf-string with escapes, and surrounding spaces", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    for (const key of ["k".repeat(255), '"a \\"quoted\\" key"', "  spaced-key  "]) {
      expect((await send(idempotency, { key }, handler)).response.status).toBe(201);
    }
    expect(handler.runs).toBe(3);
  });

  it("treats a raw key and the sf-string of the same key as one key", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    await send(idempotency, { key: "order-1" }, handler);
    const retry = await send(idempotency, { key: '"order-1"' }, handler);
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
    expect(handler.runs).toBe(1);
  });

  it("honours maxKeyLength", async () => {
    const idempotency = engine({ maxKeyLength: 8 });
    const handler = orderHandler();
    expect((await send(idempotency, { key: "12345678" }, handler)).response.status).toBe(201);
    expect((await send(idempotency, { key: "123456789" }, handler)).response.status).toBe(400);
  });
});

describe("first request and replay", () => {
  it("runs once and replays status, headers and body byte for byte with Idempotent-Replayed", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    const first = await send(idempotency, { key: "k1", body: '{"sku":"a"}' }, handler);
    const retry = await send(idempotency, { key: "k1", body: '{"sku":"a"}' }, handler);
    expect(handler.runs).toBe(1);
    expect(first.response.status).toBe(201);
    expect(first.response.headers["idempotent-replayed"]).toBeUndefined();
    expect(retry.response.status).toBe(201);
    expect(retry.response.headers).toEqual({
      "content-type": "application/json",
      location: "/orders/1",
      "idempotent-replayed": "true",
      "content-length": "8",
    });
    expect(retry.response.text()).toBe('{"id":1}');
    expect(eventTypes()).toEqual(["claimed", "completed", "replayed"]);
  });

  it("replays a binary body with every byte value exactly", async () => {
    const idempotency = engine();
    const bytes = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
    const handler: Handler = async (res) => {
      res.setHeader("content-type", "application/octet-stream");
      res.write(bytes.subarray(0, 100));
      await res.end(bytes.subarray(100));
    };
    await send(idempotency, { key: "bin" }, handler);
    const retry = await send(idempotency, { key: "bin" }, handler);
    expect(Buffer.compare(retry.response.body, Buffer.from(bytes))).toBe(0);
  });

  it("replays a 204 with no body", async () => {
    const idempotency = engine();
    let runs = 0;
    const handler: Handler = async (res) => {
      runs++;
      res.writeHead(204, { "x-deleted": "yes" });
      await res.end();
    };
    await send(idempotency, { key: "k" }, handler);
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(runs).toBe(1);
    expect(retry.response.status).toBe(204);
    expect(retry.response.headers["x-deleted"]).toBe("yes");
    expect(retry.response.body.length).toBe(0);
  });

  it("does not replay credential and hop-by-hop headers, and recomputes Content-Length", async () => {
    const idempotency = engine();
    const handler: Handler = async (res) => {
      res.writeHead(200, {
        "content-type": "text/plain",
        "content-length": "2",
        "set-cookie": ["session=secret", "other=1"],
        "www-authenticate": 'Bearer realm="x"',
        authorization: "Bearer t",
        "proxy-authenticate": "Basic",
        "authentication-info": 'nextnonce="n2", rspauth="r"',
        "proxy-authentication-info": 'nextnonce="p2"',
        connection: "keep-alive, x-hop",
        "keep-alive": "timeout=5",
        "x-hop": "1",
        "transfer-encoding": "chunked",
        "x-kept": "yes",
      });
      await res.end("ok");
    };
    const first = await send(idempotency, { key: "k" }, handler);
    expect(first.response.headers["set-cookie"]).toBe("session=secret, other=1");
    const retry = await send(idempotency, { key: "k" }, handler);
    expect(retry.response.headers).toEqual({
      "content-type": "text/plain",
      "x-kept": "yes",
      "idempotent-replayed": "true",
      "content-length": "2",
    });
  });

  it("reads the body once per request and never for requests that pass through", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    const { request } = await captureRequest(idempotency, { key: "k", body: "x" });
    expect(request.bodyReads).toBe(1);
    const passed = await captureRequest(idempotency, { method: "GET", key: "k" });
    expect(passed.request.bodyReads).toBe(0);
    void handler;
  });

  it("keeps a completed record for ttlMs, then runs the request again", async () => {
    const idempotency = engine({ ttlMs: 60_000, leaseMs: 3_000 });
    const handler = orderHandler();
    await send(idempotency, { key: "k" }, handler);
    await vi.advanceTimersByTimeAsync(59_999);
    expect((await send(idempotency, { key: "k" }, handler)).response.headers["idempotent-replayed"]).toBe(
      "true",
    );
    await vi.advanceTimersByTimeAsync(1);
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(201);
    expect(handler.runs).toBe(2);
  });
});

async function captureRequest(idempotency: ReturnType<typeof engine>, input: Parameters<typeof send>[1]) {
  const { neutralRequest } = await import("./harness.js");
  const request = neutralRequest(input);
  const decision = await idempotency.handle(request);
  if (decision.action === "execute") await decision.execution.end();
  return { request, decision };
}

describe("fingerprint", () => {
  it("answers 422 for the same key with a different body after completion, without running", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    await send(idempotency, { key: "k", body: '{"amount":10}' }, handler);
    const { response } = await send(idempotency, { key: "k", body: '{"amount":11}' }, handler);
    expect(response.status).toBe(422);
    expect(response.json()).toEqual({
      type: PROBLEM_TYPES.keyReused,
      title: "Idempotency key reused",
      status: 422,
      detail:
        "This Idempotency-Key was already used for a different request to this endpoint (another body or query). Send a " +
        "new key for a new request, or resend exactly the original request to get its result.",
    });
    expect(handler.runs).toBe(1);
    expect(eventTypes()).toEqual(["claimed", "completed", "key-reused"]);
  });

  it("answers 422 rather than 409 when the first request is still running", async () => {
    const idempotency = engine();
    const gate = deferred();
    const first = send(idempotency, { key: "k", body: "a" }, async (res) => {
      await gate.promise;
      await res.end("done");
    });
    await vi.advanceTimersByTimeAsync(0);
    const second = await send(idempotency, { key: "k", body: "b" }, orderHandler());
    expect(second.response.status).toBe(422);
    gate.resolve();
    await first;
  });

  it("ignores JSON key order and whitespace but never a changed value", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    const json = { "content-type": "application/json" };
    await send(
      idempotency,
      { key: "k", headers: json, body: '{"a":1,"b":[1,2],"n":9007199254740993}' },
      handler,
    );
    const reordered = await send(
      idempotency,
      { key: "k", headers: json, body: '{ "n": 9007199254740993, "b": [1, 2], "a": 1 }' },
      handler,
    );
    expect(reordered.response.headers["idempotent-replayed"]).toBe("true");
    const changed = await send(
      idempotency,
      { key: "k", headers: json, body: '{"a":1,"b":[1,2],"n":9007199254740992}' },
      handler,
    );
    expect(changed.response.status).toBe(422);
    const arrayOrder = await send(
      idempotency,
      { key: "k", headers: json, body: '{"a":1,"b":[2,1],"n":9007199254740993}' },
      handler,
    );
    expect(arrayOrder.response.status).toBe(422);
    expect(handler.runs).toBe(1);
  });

  it("hashes non-JSON bodies as raw bytes", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    await send(
      idempotency,
      { key: "k", headers: { "content-type": "text/plain" }, body: '{"a":1,"b":2}' },
      handler,
    );
    const reordered = await send(
      idempotency,
      { key: "k", headers: { "content-type": "text/plain" }, body: '{"b":2,"a":1}' },
      handler,
    );
    expect(reordered.response.status).toBe(422);
  });

  it("includes the query string", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    await send(idempotency, { key: "k", query: "dry=1" }, handler);
    expect((await send(idempotency, { key: "k", query: "dry=0" }, handler)).response.status).toBe(422);
    expect((await send(idempotency, { key: "k", query: "dry=1" }, handler)).response.status).toBe(201);
    expect(handler.runs).toBe(1);
  });

  it("fingerprint: false replays whatever the body", async () => {
    const idempotency = engine({ fingerprint: false });
    const handler = orderHandler();
    await send(idempotency, { key: "k", body: "a" }, handler);
    const retry = await send(idempotency, { key: "k", body: "b" }, handler);
    expect(retry.response.headers["idempotent-replayed"]).toBe("true");
    expect(handler.runs).toBe(1);
  });

  it("fingerprint headers: a different value of a listed header is a different request", async () => {
    const idempotency = engine({ fingerprint: { headers: ["X-Currency"] } });
    const handler = orderHandler();
    await send(idempotency, { key: "k", headers: { "x-currency": "EUR" } }, handler);
    expect(
      (await send(idempotency, { key: "k", headers: { "x-currency": "EUR" } }, handler)).response.status,
    ).toBe(201);
    expect(
      (await send(idempotency, { key: "k", headers: { "x-currency": "USD" } }, handler)).response.status,
    ).toBe(422);
    expect((await send(idempotency, { key: "k" }, handler)).response.status).toBe(422);
    expect(handler.runs).toBe(1);
  });

  it("a fingerprint function decides sameness on its own", async () => {
    const idempotency = engine({ fingerprint: (request) => request.headers.get("x-order") ?? "" });
    const handler = orderHandler();
    await send(idempotency, { key: "k", headers: { "x-order": "1" }, body: "a" }, handler);
    expect(
      (await send(idempotency, { key: "k", headers: { "x-order": "1" }, body: "b" }, handler)).response
        .status,
    ).toBe(201);
    expect(
      (await send(idempotency, { key: "k", headers: { "x-order": "2" } }, handler)).response.status,
    ).toBe(422);
  });
});

describe("scope", () => {
  it("runs twice for two principals using one key, and each replays its own response", async () => {
    const idempotency = engine({ scope: (request) => request.headers.get("x-tenant") ?? "anonymous" });
    const handler = orderHandler();
    const a = await send(idempotency, { key: "k", headers: { "x-tenant": "a" } }, handler);
    const b = await send(idempotency, { key: "k", headers: { "x-tenant": "b" } }, handler);
    expect(handler.runs).toBe(2);
    expect(a.response.text()).toBe('{"id":1}');
    expect(b.response.text()).toBe('{"id":2}');
    expect(
      (await send(idempotency, { key: "k", headers: { "x-tenant": "a" } }, handler)).response.text(),
    ).toBe('{"id":1}');
    expect(
      (await send(idempotency, { key: "k", headers: { "x-tenant": "b" } }, handler)).response.text(),
    ).toBe('{"id":2}');
    expect(handler.runs).toBe(2);
  });

  it("keys one record per path: the same key on another path is another request", async () => {
    const idempotency = engine();
    const handler = orderHandler();
    await send(idempotency, { key: "k", path: "/orders" }, handler);
    expect((await send(idempotency, { key: "k", path: "/refunds" }, handler)).response.status).toBe(201);
    expect(handler.runs).toBe(2);
  });

  it("hashes the identity before it reaches the store", async () => {
    const idempotency = engine({ scope: async () => "tenant-1" });
    await send(idempotency, { key: "my-raw-key" }, orderHandler());
    const claimed = events.find((event) => event.type === "claimed");
    expect(claimed?.key).toMatch(/^[0-9a-f]{64}$/);
    expect(await store.inner.get(claimed?.key ?? "")).toMatchObject({ state: "completed" });
  });

  it("rejects with a typed error when the scope function returns no principal", async () => {
    const idempotency = engine({ scope: () => "" });
    await expect(send(idempotency, { key: "k" }, orderHandler())).rejects.toMatchObject({
      code: "ERR_IDEMPOTENCY_SCOPE",
    });
    await expect(send(idempotency, { key: "k" }, orderHandler())).rejects.toBeInstanceOf(IdempotencyError);
    expect(store.totalCalls).toBe(0);
  });
});

describe("records completed without a body", () => {
  /** Runs a first request, then rewrites its completed record's response as an operator or older writer might. */
  async function completedWith(response: Uint8Array | null) {
    const idempotency = engine();
    const handler = orderHandler();
    await send(idempotency, { key: "k" }, handler);
    const key = events[0]?.key ?? "";
    const record = await store.inner.get(key);
    await store.inner.delete(key);
    const args = { token: "t", fingerprint: record?.fingerprint ?? "", leaseMs: 1_000, ttlMs: 60_000 };
    await store.inner.begin(key, { ...args, allowTakeover: false });
    await store.inner.complete(key, "t", response, 60_000);
    return { idempotency, handler };
  }

  it("answers 410 response-not-stored with the original Location, and never runs again", async () => {
    const body = encodeResponse({
      status: 201,
      headers: [
        ["location", "/orders/9"],
        ["x-other", "1"],
      ],
      body: null,
    });
    const { idempotency, handler } = await completedWith(body);
    const { response } = await send(idempotency, { key: "k" }, handler);
    expect(response.status).toBe(410);
    expect(response.headers.location).toBe("/orders/9");
    expect(response.headers["x-other"]).toBeUndefined();
    expect((response.json() as { type: string }).type).toBe(PROBLEM_TYPES.responseNotStored);
    expect(handler.runs).toBe(1);
  });

  it("answers 410 for a null response", async () => {
    const { idempotency, handler } = await completedWith(null);
    const { response } = await send(idempotency, { key: "k" }, handler);
    expect(response.status).toBe(410);
    expect(response.headers.location).toBeUndefined();
    expect(handler.runs).toBe(1);
  });

  it("answers 503 and reports store-error for an unreadable record, without running", async () => {
    const { idempotency, handler } = await completedWith(Uint8Array.of(42, 0, 0));
    const { response } = await send(idempotency, { key: "k" }, handler);
    expect(response.status).toBe(503);
    expect(events.at(-1)).toMatchObject({ type: "store-error", operation: "begin" });
    expect(handler.runs).toBe(1);
  });
});
