import { describe, expect, it } from "vitest";
import {
  createIdempotentFetch,
  DEFAULT_RETRY_ON,
  type IdempotentFetchOptions,
  IdempotentFetchOptionsError,
  idempotentFetch,
} from "../src/index.js";

/** Each case: the options, the option the error must name, and words its message must contain. */
const INVALID: Array<[options: unknown, option: string, says: string]> = [
  ["fast", "options", "expected an object of options"],
  [[1], "options", "expected an object of options"],
  [{ retries: 3 }, "retries", "unknown option. Known options: maxAttempts, baseDelayMs"],
  [{ maxAttempts: 0 }, "maxAttempts", "1 or more (1: no retries), got 0"],
  [{ maxAttempts: 2.5 }, "maxAttempts", "whole number"],
  [{ maxAttempts: Number.POSITIVE_INFINITY }, "maxAttempts", "got Infinity"],
  [{ maxAttempts: "5" }, "maxAttempts", 'got "5"'],
  [{ baseDelayMs: -1 }, "baseDelayMs", "milliseconds from 0 to 2147483647, got -1"],
  [{ baseDelayMs: Number.NaN }, "baseDelayMs", "got NaN"],
  [{ maxDelayMs: 2 ** 31 }, "maxDelayMs", "milliseconds from 0 to 2147483647"],
  [{ maxDelayMs: "10s" }, "maxDelayMs", 'got "10s"'],
  [{ deadlineMs: 0 }, "deadlineMs", "above 0 (leave it out for no limit), got 0"],
  [{ deadlineMs: null }, "deadlineMs", "got null"],
  [{ attemptTimeoutMs: -5 }, "attemptTimeoutMs", "above 0"],
  [{ retryOn: 503 }, "retryOn", "expected an array of HTTP statuses, got 503"],
  [
    { retryOn: [503, 422] },
    "retryOn",
    "422 cannot be retried: it means the idempotency key was already used",
  ],
  [{ retryOn: [200] }, "retryOn", "from 400 to 599, got 200"],
  [{ retryOn: ["503"] }, "retryOn", 'got "503"'],
  [{ methods: "POST" }, "methods", 'expected an array of HTTP methods, got "POST"'],
  [{ methods: ["POST", "NOT A METHOD"] }, "methods", 'got "NOT A METHOD"'],
  [
    { header: "Idempotency Key" },
    "header",
    'valid HTTP header name such as "Idempotency-Key", got "Idempotency Key"',
  ],
  [{ header: "" }, "header", 'got ""'],
  [{ onRetry: "log" }, "onRetry", 'expected a function, got "log"'],
  [{ fetch: {} }, "fetch", "expected a function, got an object"],
  [{ random: 0.5 }, "random", "expected a function, got 0.5"],
  [{ sleep: 100 }, "sleep", "expected a function"],
  [{ now: Date.now() }, "now", "expected a function"],
];

describe("createIdempotentFetch validates its options at construction", () => {
  it.each(INVALID)("%j: names %s", (options, option, says) => {
    let error: unknown;
    try {
      createIdempotentFetch(options as IdempotentFetchOptions);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(IdempotentFetchOptionsError);
    const optionsError = error as IdempotentFetchOptionsError;
    expect(optionsError.option).toBe(option);
    expect(optionsError.code).toBe("ERR_IDEMPOTENT_FETCH_OPTIONS");
    expect(optionsError.name).toBe("IdempotentFetchOptionsError");
    expect(optionsError.message).toContain(`Invalid option "${option}": `);
    expect(optionsError.message).toContain(says);
  });

  it("refuses a fixed key: a key names one operation, so it is passed per call", () => {
    expect(() => createIdempotentFetch({ key: "order-1" })).toThrow(
      'Invalid option "key": a key names one operation, so it cannot be fixed for every call of a created fetch',
    );
  });

  it("accepts every option at its documented form, and Infinity for no deadline", () => {
    expect(
      typeof createIdempotentFetch({
        maxAttempts: 1,
        baseDelayMs: 0,
        maxDelayMs: 0,
        deadlineMs: Number.POSITIVE_INFINITY,
        attemptTimeoutMs: 1,
        retryOn: [...DEFAULT_RETRY_ON, 500],
        methods: ["post", "PUT"],
        header: "X-Request-Key",
        onRetry: () => {},
        fetch: async () => new Response(null),
        random: () => 0,
        sleep: async () => {},
        now: () => 0,
      }),
    ).toBe("function");
    expect(DEFAULT_RETRY_ON).toEqual([408, 409, 425, 429, 502, 503, 504]);
    expect(Object.isFrozen(DEFAULT_RETRY_ON)).toBe(true);
  });
});

describe("per-call options", () => {
  it("idempotentFetch rejects (never throws) with the options error, before anything is sent", async () => {
    let sent = 0;
    const fetch = async () => {
      sent++;
      return new Response(null);
    };
    const pending = idempotentFetch("http://127.0.0.1:1/", { method: "POST" }, { fetch, maxAttempts: -1 });
    expect(pending).toBeInstanceOf(Promise);
    await expect(pending).rejects.toMatchObject({
      option: "maxAttempts",
      code: "ERR_IDEMPOTENT_FETCH_OPTIONS",
    });
    await expect(
      idempotentFetch("http://127.0.0.1:1/", { method: "POST" }, { fetch, key: "" }),
    ).rejects.toThrow(
      'Invalid option "key": expected a non-empty string of printable ASCII (0x20-0x7E), got ""',
    );
    await expect(
      idempotentFetch("http://127.0.0.1:1/", { method: "POST" }, { fetch, key: "naïve" }),
    ).rejects.toThrow(IdempotentFetchOptionsError);
    expect(sent).toBe(0);
  });

  it("a created fetch merges per-call options over its own and validates them", async () => {
    const statuses = [503, 503, 201];
    const fetch = async () => new Response(null, { status: statuses.shift() });
    const fetchWithRetries = createIdempotentFetch({ fetch, maxAttempts: 2, sleep: async () => {} });
    await expect(
      fetchWithRetries("http://example.test/", { method: "POST" }, { maxAttempts: "x" as never }),
    ).rejects.toMatchObject({
      option: "maxAttempts",
    });
    const response = await fetchWithRetries("http://example.test/", { method: "POST" }, { maxAttempts: 3 });
    expect(response.status).toBe(201);
    expect(response.attempts).toBe(3);
  });
});
