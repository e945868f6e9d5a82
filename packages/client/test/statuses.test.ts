/**
 * The client against a plain HTTP server that speaks only the IETF draft's statuses and headers (nothing of
 * @idempotency): which answers are retried, how long each wait is, and what comes back.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  IdempotencyKeyReusedError,
  IdempotentFetchGaveUpError,
  idempotentFetch,
  PROBLEM_TYPES,
  type RetryEvent,
} from "../src/index.js";
import { fakeClock, problemJson, type Running, type Scripted, scriptedServer } from "./support.js";

const open: Running[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((running) => running.close()));
});
async function serve(script: Scripted[]) {
  const server = await scriptedServer(script);
  open.push(server);
  return server;
}

const post: RequestInit = {
  method: "POST",
  body: '{"amount":100}',
  headers: { "content-type": "application/json" },
};
const created: Scripted = {
  status: 201,
  headers: { "content-type": "application/json" },
  body: '{"id":"pay_1"}',
};

describe("Retry-After", () => {
  it("waits exactly the seconds the server asks for, instead of the backoff", async () => {
    const server = await serve([
      { status: 503, headers: { "retry-after": "2" } },
      { status: 429, headers: { "retry-after": "7" } },
      created,
    ]);
    const clock = fakeClock();
    const events: RetryEvent[] = [];
    const response = await idempotentFetch(server.url, post, {
      ...clock.options,
      random: () => 0.5,
      onRetry: (event) => events.push(event),
    });
    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({ id: "pay_1" });
    expect(response.replayed).toBe(false);
    expect(clock.delays).toEqual([2_000, 7_000]);
    expect(events.map((event) => [event.attempt, event.status, event.retryAfterMs, event.delayMs])).toEqual([
      [1, 503, 2_000, 2_000],
      [2, 429, 7_000, 7_000],
    ]);
  });

  it("reads an HTTP date against the response's Date header, or against now() when it has none", async () => {
    // The client's clock is a day behind the server's: the first wait does not depend on it.
    const clientStart = 1_699_913_600_000;
    const server = await serve([
      {
        status: 503,
        headers: { date: "Tue, 14 Nov 2023 22:13:20 GMT", "retry-after": "Tue, 14 Nov 2023 22:13:25 GMT" },
      },
      // No Date header: measured on the client's clock, which the first wait moved by 5 s.
      {
        status: 503,
        noDate: true,
        headers: { "retry-after": new Date(clientStart + 5_000 + 4_000).toUTCString() },
      },
      created,
    ]);
    const clock = fakeClock(clientStart);
    const response = await idempotentFetch(server.url, post, clock.options);
    expect(response.status).toBe(201);
    expect(clock.delays).toEqual([5_000, 4_000]);
  });

  it("a Retry-After longer than maxDelayMs gives up at once, with the response, rather than retry early", async () => {
    const server = await serve([
      {
        status: 503,
        headers: { "retry-after": "60", "content-type": "application/problem+json" },
        body: problemJson("https://api.example/problems/maintenance", 503, "Down for maintenance"),
      },
    ]);
    const clock = fakeClock();
    const error = await idempotentFetch(server.url, post, clock.options).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    const gaveUp = error as IdempotentFetchGaveUpError;
    expect([gaveUp.limit, gaveUp.reason, gaveUp.attempts, gaveUp.status, gaveUp.retryAfterMs]).toEqual([
      "maxDelayMs",
      "status",
      1,
      503,
      60_000,
    ]);
    expect(gaveUp.problem?.title).toBe("Down for maintenance");
    expect(gaveUp.message).toContain(
      "gave up after 1 attempt: the server asked to wait 60000 ms (Retry-After), longer than maxDelayMs (10000); " +
        "the last attempt got 503 Down for maintenance.",
    );
    expect((await gaveUp.response!.json()).title).toBe("Down for maintenance");
    expect(clock.delays).toEqual([]);
    expect(server.requests).toHaveLength(1);
  });

  it("ignores an invalid Retry-After and backs off instead", async () => {
    const server = await serve([{ status: 503, headers: { "retry-after": "soon" } }, created]);
    const clock = fakeClock();
    await idempotentFetch(server.url, post, { ...clock.options, random: () => 0.5 });
    expect(clock.delays).toEqual([50]);
  });
});

describe("what is retried", () => {
  it("retries each default status (408, 409, 425, 429, 502, 503, 504), then returns the success", async () => {
    const statuses = [408, 409, 425, 429, 502, 503, 504];
    const server = await serve([...statuses.map((status) => ({ status })), created]);
    const clock = fakeClock();
    const events: RetryEvent[] = [];
    const response = await idempotentFetch(server.url, post, {
      ...clock.options,
      maxAttempts: 8,
      random: () => 0.5,
      onRetry: (event) => events.push(event),
    });
    expect(response.status).toBe(201);
    expect(response.attempts).toBe(8);
    expect(events.map((event) => event.status)).toEqual(statuses);
    expect(clock.delays).toEqual([50, 100, 200, 400, 800, 1_600, 3_200]);
    expect(new Set(server.requests.map((request) => request.headers["idempotency-key"])).size).toBe(1);
    expect(server.requests.map((request) => request.body)).toEqual(Array(8).fill('{"amount":100}'));
  });

  it("returns other 4xx and 5xx at once, as fetch would", async () => {
    for (const status of [400, 401, 403, 404, 410, 413, 500, 501]) {
      const server = await serve([{ status, body: `status ${status}` }, created]);
      const response = await idempotentFetch(server.url, post, fakeClock().options);
      expect([response.status, response.attempts, await response.text()]).toEqual([
        status,
        1,
        `status ${status}`,
      ]);
      expect(server.requests).toHaveLength(1);
    }
  });

  it("treats 409 as final for a request without a key (a PUT's version conflict)", async () => {
    const server = await serve([{ status: 409, body: "version conflict" }, created]);
    const response = await idempotentFetch(server.url, { method: "PUT", body: "{}" }, fakeClock().options);
    expect(response.status).toBe(409);
    expect(response.idempotencyKey).toBeNull();
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0]!.headers["idempotency-key"]).toBeUndefined();
  });

  it("retries a GET without giving it a key (it is safe to repeat by definition)", async () => {
    const server = await serve([{ status: 503 }, { status: 200, body: "ok" }]);
    const response = await idempotentFetch(server.url, undefined, {
      ...fakeClock().options,
      random: () => 0,
    });
    expect([response.status, response.attempts, response.idempotencyKey, response.replayed]).toEqual([
      200,
      2,
      null,
      false,
    ]);
    expect(server.requests.map((request) => request.headers["idempotency-key"])).toEqual([
      undefined,
      undefined,
    ]);
  });

  it("sends a method that is neither keyed nor idempotent once, as plain fetch", async () => {
    const server = await serve([{ status: 503, body: "busy" }, created]);
    const response = await idempotentFetch(server.url, { method: "LOCK" }, fakeClock().options);
    expect([response.status, response.attempts, response.idempotencyKey]).toEqual([503, 1, null]);
    expect(server.requests).toHaveLength(1);
  });

  it("gives up after maxAttempts with IdempotentFetchGaveUpError carrying the last response", async () => {
    const server = await serve([{ status: 502, body: "bad gateway" }]);
    const clock = fakeClock();
    const error = (await idempotentFetch(server.url, post, {
      ...clock.options,
      maxAttempts: 2,
      random: () => 0,
    }).catch((caught: unknown) => caught)) as IdempotentFetchGaveUpError;
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    expect([error.limit, error.attempts, error.status, error.problem, error.cause]).toEqual([
      "maxAttempts",
      2,
      502,
      undefined,
      undefined,
    ]);
    expect(await error.response!.text()).toBe("bad gateway");
    expect(error.message).toContain(
      "gave up after 2 attempts (maxAttempts: 2); the last attempt got 502 Bad Gateway.",
    );
    expect(clock.delays).toEqual([0]);
  });

  it("maxAttempts: 1 sends once and gives up on a retryable answer", async () => {
    const server = await serve([{ status: 503 }, created]);
    const error = await idempotentFetch(server.url, post, { ...fakeClock().options, maxAttempts: 1 }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ limit: "maxAttempts", attempts: 1, status: 503 });
    expect(server.requests).toHaveLength(1);
  });

  it("gives up after network errors with the last one as cause", async () => {
    const server = await serve([created]);
    await server.close();
    open.splice(open.indexOf(server), 1);
    const clock = fakeClock();
    const error = (await idempotentFetch(server.url, post, {
      ...clock.options,
      maxAttempts: 3,
      random: () => 0.5,
    }).catch((caught: unknown) => caught)) as IdempotentFetchGaveUpError;
    expect(error).toBeInstanceOf(IdempotentFetchGaveUpError);
    expect([error.limit, error.reason, error.attempts, error.response, error.status]).toEqual([
      "maxAttempts",
      "network",
      3,
      undefined,
      undefined,
    ]);
    expect(error.cause).toBeInstanceOf(TypeError);
    expect(error.message).toMatch(
      /the last attempt failed before a response arrived \(fetch failed: .*ECONNREFUSED/,
    );
    expect(clock.delays).toEqual([50, 100]);
  });

  it("ignores errors thrown by onRetry", async () => {
    const server = await serve([{ status: 503 }, created]);
    const response = await idempotentFetch(server.url, post, {
      ...fakeClock().options,
      onRetry: () => {
        throw new Error("logger down");
      },
    });
    expect(response.status).toBe(201);
  });
});

describe("422 from a server that is not ours", () => {
  const reused: Scripted = {
    status: 422,
    headers: { "content-type": "application/problem+json" },
    body: problemJson("https://api.example/docs/idempotency", 422, "Idempotency-Key is already used"),
  };

  it("is key reuse when the caller chose the key (it may have been used before)", async () => {
    const server = await serve([reused]);
    const error = await idempotentFetch(server.url, post, { key: "pay-42" }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(IdempotencyKeyReusedError);
    expect((error as IdempotencyKeyReusedError).problem.title).toBe("Idempotency-Key is already used");
    expect(server.requests[0]!.headers["idempotency-key"]).toBe('"pay-42"');
  });

  it("is the application's answer when the key is new (this call generated it): returned as a response", async () => {
    const server = await serve([reused]);
    const response = await idempotentFetch(server.url, post);
    expect(response.status).toBe(422);
    expect(response.idempotencyKey).not.toBeNull();
  });

  it("is a stored answer, never key reuse, when replayed; and a 422 that is not problem+json is a response", async () => {
    const server = await serve([
      { ...reused, headers: { ...reused.headers, "idempotent-replayed": "true" } },
      { status: 422, headers: { "content-type": "application/json" }, body: '{"errors":["amount"]}' },
      {
        status: 422,
        headers: { "content-type": "application/problem+json" },
        body: problemJson(PROBLEM_TYPES.invalidKey, 422, "not ours to call reuse"),
      },
    ]);
    const replay = await idempotentFetch(server.url, post, { key: "pay-43" });
    expect([replay.status, replay.replayed]).toEqual([422, true]);
    const validation = await idempotentFetch(server.url, post, { key: "pay-44" });
    expect(await validation.json()).toEqual({ errors: ["amount"] });
    const otherOfOurs = await idempotentFetch(server.url, post, { key: "pay-45" });
    expect(otherOfOurs.status).toBe(422);
  });
});
