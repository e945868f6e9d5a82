import { describe, expect, it } from "vitest";
import {
  IdempotencyInvalidKeyError,
  IdempotencyOptionsError,
  type IdempotencyProblem,
  PROBLEM_TYPES,
} from "../src/index.js";
import { type Handler, send } from "./harness.js";
import { deferred, events, store, useEngineFixture } from "./support.js";

const engine = useEngineFixture();

function orderHandler() {
  const handler = Object.assign(
    async (res: Parameters<Handler>[0]) => {
      handler.runs++;
      res.writeHead(201, { "content-type": "application/json" });
      await res.end(JSON.stringify({ id: handler.runs }));
    },
    { runs: 0 },
  );
  return handler;
}

describe("skip", () => {
  it("lets a request it picks through unguarded: no store call, the handler runs every time", async () => {
    const idempotency = engine({ skip: (request) => request.headers.get("x-internal") === "yes" });
    const handler = orderHandler();
    const internal = { key: "k", headers: { "x-internal": "yes" } };
    expect((await send(idempotency, internal, handler)).action).toBe("pass");
    expect((await send(idempotency, internal, handler)).response.text()).toBe('{"id":2}');
    expect(store.totalCalls).toBe(0);
    const guarded = await send(idempotency, { key: "k" }, handler);
    expect(guarded.action).toBe("execute");
    expect((await send(idempotency, { key: "k" }, handler)).response.headers["idempotent-replayed"]).toBe(
      "true",
    );
    expect(handler.runs).toBe(3);
  });

  it("may be async, and runs before the key is read: a skipped request with a bad key is not refused", async () => {
    const idempotency = engine({ skip: async (request) => request.path === "/health" });
    const handler = orderHandler();
    expect((await send(idempotency, { key: "", path: "/health" }, handler)).action).toBe("pass");
    expect((await send(idempotency, { key: "", path: "/orders" }, handler)).response.status).toBe(400);
    expect(handler.runs).toBe(1);
  });
});

describe("formatProblem", () => {
  it("shapes every problem in the application's envelope, keeping the status and the contract's headers", async () => {
    const seen: IdempotencyProblem[] = [];
    const idempotency = engine({
      formatProblem: (problem, request) => {
        seen.push(problem);
        return {
          body: {
            error: { code: problem.type.split(":").at(-1), message: problem.detail, path: request.path },
          },
          headers: { "x-error-envelope": "v2", "retry-after": "999", "content-length": "1" },
        };
      },
    });
    const gate = deferred();
    const first = send(idempotency, { key: "k" }, async (res) => {
      await gate.promise;
      res.writeHead(201);
      await res.end("ok");
    });
    await Promise.resolve();
    const busy = await send(idempotency, { key: "k" }, orderHandler());
    expect(busy.response.status).toBe(409);
    expect(busy.response.headers["retry-after"]).toBe("1"); // the contract's, not the hook's 999
    expect(busy.response.headers["x-error-envelope"]).toBe("v2");
    expect(busy.response.headers["content-type"]).toBe("application/json");
    expect(busy.response.headers["cache-control"]).toBe("no-store");
    expect(busy.response.json()).toEqual({
      error: {
        code: "in-progress",
        message:
          "A request with this Idempotency-Key is still being processed. Retry after 1 s to get its result.",
        path: "/orders",
      },
    });
    expect(busy.response.headers["content-length"]).toBe(String(busy.response.body.length));
    gate.resolve();
    await first;
    expect((await send(idempotency, { key: "" }, orderHandler())).response.status).toBe(400);
    expect((await send(idempotency, { key: "k", body: "other" }, orderHandler())).response.status).toBe(422);
    expect(seen.map((problem) => [problem.status, problem.type])).toEqual([
      [409, PROBLEM_TYPES.inProgress],
      [400, PROBLEM_TYPES.invalidKey],
      [422, PROBLEM_TYPES.keyReused],
    ]);
  });

  it("keeps problem+json when the hook returns nothing or throws; sends strings and bytes as they are", async () => {
    let mode: "none" | "throw" | "text" | "bytes" = "none";
    const idempotency = engine({
      required: true,
      formatProblem: () => {
        if (mode === "throw") throw new Error("bug in the hook");
        if (mode === "text") return { body: "no key" };
        if (mode === "bytes") return { body: new Uint8Array([1, 2]), contentType: "application/x-custom" };
        return undefined;
      },
    });
    const ask = async () => (await send(idempotency, {}, orderHandler())).response;
    for (const current of ["none", "throw"] as const) {
      mode = current;
      const response = await ask();
      expect(response.status).toBe(400);
      expect(response.headers["content-type"]).toBe("application/problem+json");
      expect((response.json() as { type: string }).type).toBe(PROBLEM_TYPES.missingKey);
    }
    mode = "text";
    const text = await ask();
    expect([text.status, text.headers["content-type"], text.text()]).toEqual([
      400,
      "text/plain; charset=utf-8",
      "no key",
    ]);
    mode = "bytes";
    const bytes = await ask();
    expect([bytes.headers["content-type"], [...bytes.body]]).toEqual(["application/x-custom", [1, 2]]);
  });
});

describe("forget", () => {
  it("deletes the record of one HTTP identity, given the key as sent, the method and the path", async () => {
    const idempotency = engine({ scope: (request) => request.headers.get("x-tenant") ?? "anonymous" });
    const handler = orderHandler();
    const request = { key: '"order-7"', headers: { "x-tenant": "t1" } };
    await send(idempotency, request, handler);
    await send(idempotency, { key: "order-7", headers: { "x-tenant": "t2" } }, handler);
    expect(await idempotency.forget('"order-7"', { scope: "t1", method: "post", path: "/orders" })).toBe(
      true,
    );
    expect(await idempotency.forget("order-7", { scope: "t1", method: "POST", path: "/orders" })).toBe(false);
    expect((await send(idempotency, request, handler)).response.text()).toBe('{"id":3}'); // runs again
    const other = await send(idempotency, { key: "order-7", headers: { "x-tenant": "t2" } }, handler);
    expect(other.response.headers["idempotent-replayed"]).toBe("true"); // the other tenant's record stays
    expect(handler.runs).toBe(3);
  });

  it("deletes a run() record given only its key and scope", async () => {
    const idempotency = engine();
    let runs = 0;
    const charge = () => ++runs;
    expect(await idempotency.run("msg-1", charge)).toBe(1);
    expect(await idempotency.run("msg-1", charge)).toBe(1);
    expect(await idempotency.forget("msg-1")).toBe(true);
    expect(await idempotency.run("msg-1", charge)).toBe(2);
    expect(events.filter((event) => event.type === "claimed")).toHaveLength(2);
  });

  it("rejects bad arguments with typed errors that name them", async () => {
    const scoped = engine({ scope: () => "t" });
    await expect(scoped.forget("k")).rejects.toThrow(/Invalid option "scope": forget\(\) needs \{ scope \}/);
    const idempotency = engine();
    await expect(idempotency.forget("k", { method: "POST" })).rejects.toThrow(/Invalid option "path"/);
    await expect(idempotency.forget("k", { path: "/orders" })).rejects.toThrow(/Invalid option "method"/);
    await expect(idempotency.forget("k", { method: "POST", path: "/orders?a=1" })).rejects.toThrow(
      /without the query string/,
    );
    await expect(idempotency.forget("a,b", { method: "POST", path: "/o" })).rejects.toBeInstanceOf(
      IdempotencyInvalidKeyError,
    );
    await expect(idempotency.forget("", {})).rejects.toBeInstanceOf(IdempotencyInvalidKeyError);
    await expect(idempotency.forget("k", { tenant: "t" } as never)).rejects.toBeInstanceOf(
      IdempotencyOptionsError,
    );
    expect(store.calls.delete).toBe(0);
  });
});
