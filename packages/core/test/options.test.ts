import { describe, expect, it } from "vitest";
import {
  booleanOption,
  checkOptionNames,
  createIdempotency,
  defaultShouldStore,
  type IdempotencyOptions,
  IdempotencyOptionsError,
  MemoryStore,
  wholeNumberOption,
} from "../src/index.js";

const store = new MemoryStore();

function optionError(options: Record<string, unknown>): IdempotencyOptionsError {
  try {
    createIdempotency(options as unknown as IdempotencyOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(IdempotencyOptionsError);
    return error as IdempotencyOptionsError;
  }
  throw new Error("expected createIdempotency to throw");
}

describe("options are validated at construction", () => {
  const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
    ["store", { scope: "global" }, /required: pass a store/],
    ["store", { store: {}, scope: "global" }, /no `begin` method/],
    ["scope", { store }, /required: a function/],
    ["scope", { store, scope: "tenant" }, /or "global"/],
    ["header", { store, scope: "global", header: "Idempotency Key" }, /valid HTTP header name/],
    ["header", { store, scope: "global", header: "" }, /valid HTTP header name/],
    ["methods", { store, scope: "global", methods: [] }, /non-empty array/],
    ["methods", { store, scope: "global", methods: "POST" }, /non-empty array/],
    ["methods", { store, scope: "global", methods: ["PO ST"] }, /HTTP method names/],
    ["required", { store, scope: "global", required: "yes" }, /true or false/],
    [
      "maxKeyLength",
      { store, scope: "global", maxKeyLength: 0 },
      /positive whole number of characters, got 0/,
    ],
    ["maxKeyLength", { store, scope: "global", maxKeyLength: 1.5 }, /whole number/],
    ["fingerprint", { store, scope: "global", fingerprint: true }, /expected false/],
    ["fingerprint", { store, scope: "global", fingerprint: { headers: ["bad header"] } }, /expected false/],
    ["ttlMs", { store, scope: "global", ttlMs: 0 }, /positive whole number/],
    ["ttlMs", { store, scope: "global", ttlMs: "1d" }, /positive whole number/],
    ["leaseMs", { store, scope: "global", leaseMs: -1 }, /positive whole number/],
    ["leaseMs", { store, scope: "global", leaseMs: Number.NaN }, /positive whole number/],
    ["leaseMs", { store, scope: "global", leaseMs: 2 }, /at least 3 ms/],
    ["leaseMs", { store, scope: "global", leaseMs: 10_000, ttlMs: 5_000 }, /must not exceed ttlMs/],
    ["onLeaseExpired", { store, scope: "global", onLeaseExpired: "retry" }, /"run-again" or "conflict"/],
    [
      "maxExecutionMs",
      { store, scope: "global", maxExecutionMs: true },
      /whole number of milliseconds or false/,
    ],
    [
      "maxExecutionMs",
      { store, scope: "global", maxExecutionMs: 0 },
      /whole number of milliseconds or false/,
    ],
    ["maxExecutionMs", { store, scope: "global", maxExecutionMs: 1_000 }, /at least leaseMs \(30000\)/],
    [
      "maxExecutionMs",
      { store, scope: "global", ttlMs: 60_000, maxExecutionMs: 120_000 },
      /must not exceed ttlMs \(60000\).*pass false/,
    ],
    ["retryAfterMs", { store, scope: "global", retryAfterMs: 0 }, /positive whole number/],
    ["retryAfterMs", { store, scope: "global", retryAfterMs: "1s" }, /positive whole number/],
    ["shouldStore", { store, scope: "global", shouldStore: [200] }, /expected a function/],
    ["onEvent", { store, scope: "global", onEvent: "console" }, /expected a function/],
    ["now", { store, scope: "global", now: 5 }, /expected a function/],
    ["leasMs", { store, scope: "global", leasMs: 1000 }, /unknown option/],
    ["waitMs", { store, scope: "global", waitMs: -1 }, /0 or more/],
    ["waitMs", { store, scope: "global", waitMs: "1s" }, /0 or more/],
    ["maxResponseBytes", { store, scope: "global", maxResponseBytes: 1.5 }, /whole number of bytes/],
    ["maxResponseBytes", { store, scope: "global", maxResponseBytes: "1mb" }, /whole number of bytes/],
    ["maxRequestBytes", { store, scope: "global", maxRequestBytes: -1 }, /whole number of bytes/],
    ["storeTimeoutMs", { store, scope: "global", storeTimeoutMs: 0 }, /positive whole number/],
    ["storeTimeoutMs", { store, scope: "global", storeTimeoutMs: 30_000 }, /shorter than leaseMs \(30000\)/],
    ["failOpen", { store, scope: "global", failOpen: "yes" }, /true or false/],
    ["replayHeaders", { store, scope: "global", replayHeaders: ["set-cookie"] }, /\{ allow\?/],
    [
      "replayHeaders",
      { store, scope: "global", replayHeaders: { allowed: ["x"] } },
      /unknown field "allowed"/,
    ],
    [
      "replayHeaders.allow",
      { store, scope: "global", replayHeaders: { allow: "set-cookie" } },
      /array of header/,
    ],
    [
      "replayHeaders.deny",
      { store, scope: "global", replayHeaders: { deny: ["bad header"] } },
      /array of header/,
    ],
    [
      "replayHeaders.allow",
      { store, scope: "global", replayHeaders: { allow: ["Transfer-Encoding"] } },
      /"transfer-encoding" is a hop-by-hop or framing header/,
    ],
  ];

  for (const [option, options, message] of invalid) {
    it(`rejects ${JSON.stringify(options, (key, value) => (key === "store" ? "<store>" : value))}`, () => {
      const error = optionError(options);
      expect(error.option).toBe(option);
      expect(error.code).toBe("ERR_IDEMPOTENCY_OPTIONS");
      expect(error.message).toMatch(new RegExp(`^Invalid option "${option}": `));
      expect(error.message).toMatch(message);
    });
  }

  it("keeps the default maxExecutionMs within leaseMs and ttlMs", () => {
    const short = createIdempotency({ store, scope: "global", leaseMs: 3_000, ttlMs: 60_000 });
    expect(short.options.maxExecutionMs).toBe(60_000);
    const long = createIdempotency({ store, scope: "global", leaseMs: 900_000 });
    expect(long.options.maxExecutionMs).toBe(900_000);
  });

  it("rejects a missing options object", () => {
    expect(optionError(undefined as unknown as Record<string, unknown>).option).toBe("options");
  });

  it("applies the documented defaults", () => {
    const { options } = createIdempotency({ store, scope: "global" });
    expect(options.header).toBe("Idempotency-Key");
    expect([...options.methods]).toEqual(["POST", "PATCH"]);
    expect(options.required).toBe(false);
    expect(options.maxKeyLength).toBe(255);
    expect(options.ttlMs).toBe(86_400_000);
    expect(options.leaseMs).toBe(30_000);
    expect(options.onLeaseExpired).toBe("run-again");
    expect(options.maxExecutionMs).toBe(600_000);
    expect(options.retryAfterMs).toBe(1_000);
    expect(options.shouldStore).toBe(defaultShouldStore);
    expect(options.waitMs).toBe(0);
    expect(options.maxResponseBytes).toBe(1_048_576);
    expect(options.maxRequestBytes).toBe(1_048_576);
    expect(options.storeTimeoutMs).toBe(2_000);
    expect(options.failOpen).toBe(false);
    expect([...options.unreplayedHeaders]).toEqual([
      "set-cookie",
      "www-authenticate",
      "authorization",
      "proxy-authenticate",
      "authentication-info",
      "proxy-authentication-info",
    ]);
  });
});

describe("defaultShouldStore", () => {
  it("stores every status below 500 except 408, 409, 425, 429 and 499", () => {
    const stored = [];
    for (let status = 100; status < 600; status++) if (defaultShouldStore(status)) stored.push(status);
    expect(stored).toHaveLength(400 - 5);
    expect(stored).not.toContain(408);
    expect(stored).not.toContain(409);
    expect(stored).not.toContain(425);
    expect(stored).not.toContain(429);
    expect(stored).not.toContain(499); // Client Closed Request: the client left before there was an outcome
    expect(stored.at(-1)).toBe(498);
  });
});

describe("checkOptionNames, for store and binding authors", () => {
  const check = (options: unknown) => () => checkOptionNames(options, ["client", "prefix"], "`{ client }`");

  it("accepts an object whose names are all known, including an empty one", () => {
    expect(check({ client: {}, prefix: "p:" })).not.toThrow();
    expect(check({})).not.toThrow();
  });

  it("names the first unknown option and lists the known ones", () => {
    expect(check({ client: {}, prefx: "p:" })).toThrow(
      new IdempotencyOptionsError("prefx", "unknown option. Known options: client, prefix."),
    );
    try {
      check({ prefx: 1 })();
    } catch (error) {
      expect(error).toBeInstanceOf(IdempotencyOptionsError);
      expect((error as IdempotencyOptionsError).option).toBe("prefx");
      expect((error as IdempotencyOptionsError).code).toBe("ERR_IDEMPOTENCY_OPTIONS");
    }
  });

  it.each([undefined, null, "client", 42, ["client"]])("rejects %j as the options", (options) => {
    expect(check(options)).toThrow('Invalid option "options": expected `{ client }`.');
  });
});

describe("the shared option checks", () => {
  it("wholeNumberOption names the option, the unit, the bound and what it got", () => {
    expect(wholeNumberOption("n", undefined, { min: 0, unit: "bytes", fallback: 7 })).toBe(7);
    expect(wholeNumberOption("n", 0, { min: 0, unit: "bytes" })).toBe(0);
    expect(() => wholeNumberOption("n", undefined, { min: 0, unit: "bytes" })).toThrow(
      'Invalid option "n": expected a whole number of bytes, 0 or more, got undefined.',
    );
    expect(() => wholeNumberOption("n", 0, { min: 1, unit: "tries" })).toThrow(
      'Invalid option "n": expected a positive whole number of tries, got 0.',
    );
    expect(() => wholeNumberOption("n", 2.5, { min: 3, unit: "ms" })).toThrow(
      'Invalid option "n": expected a whole number of ms, at least 3, got 2.5.',
    );
    expect(() => wholeNumberOption("n", "5", { min: 0, unit: "ms" })).toThrow(
      'Invalid option "n": expected a whole number of ms, 0 or more, got "5".',
    );
    expect(() => wholeNumberOption("n", 2 ** 53, { min: 0, unit: "ms" })).toThrow(IdempotencyOptionsError);
  });

  it("booleanOption accepts only true and false, and applies the fallback when absent", () => {
    expect(booleanOption("b", undefined, true)).toBe(true);
    expect(booleanOption("b", false, true)).toBe(false);
    expect(() => booleanOption("b", "false", false)).toThrow(
      'Invalid option "b": expected true or false, got "false".',
    );
  });
});
