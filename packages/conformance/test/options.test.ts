import { IdempotencyOptionsError } from "@idempotency/core";
import { describe, expect, it } from "vitest";
import { resolveOptions } from "../src/harness.js";
import { describeStore } from "../src/index.js";

describe("describeStore options", () => {
  it("rejects a factory that is not a function, naming it", () => {
    expect(() => describeStore("x", "store" as never)).toThrow(IdempotencyOptionsError);
    expect(() => describeStore("x", "store" as never)).toThrow(/Invalid option "factory"/);
  });

  it.each([
    ["instances", { instances: 0 }],
    ["concurrency", { concurrency: 1 }],
    ["realTimeLeaseMs", { realTimeLeaseMs: 1.5 }],
    ["advanceTime", { advanceTime: 5 as never }],
    ["stall", { stall: "pause" as never }],
  ])("rejects an invalid %s", (option, options) => {
    expect(() => resolveOptions(options)).toThrow(new RegExp(`^Invalid option "${option}"`));
  });

  it("defaults to 5 instances, 50 contenders and a 200 ms real-time lease", () => {
    const resolved = resolveOptions({});
    expect(resolved.instances).toBe(5);
    expect(resolved.concurrency).toBe(50);
    expect(resolved.timing.leaseMs).toBe(200);
    expect(resolveOptions({ advanceTime: () => {} }).timing.marginMs).toBe(1);
  });
});
