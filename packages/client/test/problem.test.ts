import { PROBLEM_TYPES as CORE_PROBLEM_TYPES } from "@idempotency/core";
import { describe, expect, it } from "vitest";
import { PROBLEM_TYPES, parseProblem } from "../src/index.js";

const problem = (body: string, headers: Record<string, string> = {}, status = 409) =>
  new Response(body, { status, headers: { "content-type": "application/problem+json", ...headers } });

describe("PROBLEM_TYPES", () => {
  it("are exactly the server's (copied, so the client needs no server code at run time)", () => {
    expect(PROBLEM_TYPES).toEqual(CORE_PROBLEM_TYPES);
  });
});

describe("parseProblem", () => {
  it("reads type, title, detail, instance, extensions, and Retry-After as retryAfterMs", async () => {
    const response = problem(
      JSON.stringify({
        type: PROBLEM_TYPES.inProgress,
        title: "Request in progress",
        status: 409,
        detail: "Retry after 3 s.",
        instance: "/orders/attempts/1",
        leaseMs: 3000,
      }),
      { "retry-after": "3" },
    );
    expect(await parseProblem(response)).toEqual({
      type: PROBLEM_TYPES.inProgress,
      title: "Request in progress",
      status: 409,
      detail: "Retry after 3 s.",
      instance: "/orders/attempts/1",
      retryAfterMs: 3_000,
      extensions: { leaseMs: 3000 },
    });
    // It read a clone: the response itself is still readable.
    expect((await response.json()).title).toBe("Request in progress");
  });

  it("defaults type to about:blank, ignores members of the wrong JSON type, takes the status from the response", async () => {
    expect(await parseProblem(problem('{"title":7,"status":"bad","detail":null}', {}, 503))).toEqual({
      type: "about:blank",
      title: undefined,
      status: 503,
      detail: undefined,
      instance: undefined,
      retryAfterMs: undefined,
      extensions: {},
    });
  });

  it("accepts media type parameters and any case", async () => {
    const response = new Response('{"type":"urn:x"}', {
      status: 400,
      headers: { "content-type": "Application/Problem+JSON; charset=utf-8" },
    });
    expect((await parseProblem(response))?.type).toBe("urn:x");
  });

  it("is undefined for other media types, non-object JSON, invalid JSON, used or empty bodies, and bodies over 64 KiB", async () => {
    const json = new Response('{"type":"urn:x"}', { headers: { "content-type": "application/json" } });
    expect(await parseProblem(json)).toBeUndefined();
    expect(await parseProblem(problem("[1,2]"))).toBeUndefined();
    expect(await parseProblem(problem("null"))).toBeUndefined();
    expect(await parseProblem(problem("{not json"))).toBeUndefined();
    const used = problem('{"type":"urn:x"}');
    await used.text();
    expect(await parseProblem(used)).toBeUndefined();
    expect(
      await parseProblem(
        new Response(null, { status: 409, headers: { "content-type": "application/problem+json" } }),
      ),
    ).toBeUndefined();
    const large = JSON.stringify({ type: "urn:x", detail: "x".repeat(70_000) });
    expect(await parseProblem(problem(large))).toBeUndefined();
  });
});
