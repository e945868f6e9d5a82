import { describe, expect, it } from "vitest";
import { backoffDelay } from "../src/backoff.js";
import { parseRetryAfter } from "../src/retry-after.js";

describe("backoffDelay: random(0, min(maxDelayMs, baseDelayMs · 2^n))", () => {
  it("doubles the ceiling with every retry and scales it by random()", () => {
    const half = () => 0.5;
    expect([0, 1, 2, 3, 4].map((n) => backoffDelay(n, 100, 10_000, half))).toEqual([50, 100, 200, 400, 800]);
    const almostOne = () => 0.999_999;
    expect([0, 1, 2].map((n) => backoffDelay(n, 100, 10_000, almostOne))).toEqual([99, 199, 399]);
    expect(backoffDelay(5, 100, 10_000, () => 0)).toBe(0);
  });

  it("never exceeds maxDelayMs, however many retries came before", () => {
    const top = () => 0.999_999;
    expect(backoffDelay(7, 100, 10_000, top)).toBe(9_999); // 12 800 capped at 10 000
    expect(backoffDelay(60, 100, 10_000, top)).toBe(9_999);
    expect(backoffDelay(2_000, 100, 10_000, top)).toBe(9_999); // 2^2000 is Infinity: still capped
    expect(backoffDelay(3, 100, 250, () => 0.5)).toBe(125);
  });

  it("keeps a random() outside [0, 1) inside the range", () => {
    expect(backoffDelay(1, 100, 10_000, () => -3)).toBe(0);
    expect(backoffDelay(1, 100, 10_000, () => Number.NaN)).toBe(0);
    expect(backoffDelay(1, 100, 10_000, () => 7)).toBe(200);
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("Tue, 14 Nov 2023 22:13:20 GMT");

  it("reads delay-seconds as milliseconds", () => {
    expect(parseRetryAfter("0", null, now)).toBe(0);
    expect(parseRetryAfter("3", null, now)).toBe(3_000);
    expect(parseRetryAfter(" 120 ", null, now)).toBe(120_000);
  });

  it("measures an HTTP-date from the response's Date header, so the client's clock does not matter", () => {
    const date = "Tue, 14 Nov 2023 22:13:20 GMT";
    expect(parseRetryAfter("Tue, 14 Nov 2023 22:13:25 GMT", date, now + 3_600_000)).toBe(5_000);
    // RFC 850 and asctime forms, which HTTP/1.1 recipients must accept.
    expect(parseRetryAfter("Tuesday, 14-Nov-23 22:13:27 GMT", date, 0)).toBe(7_000);
    expect(parseRetryAfter("Tue Nov 14 22:13:30 2023", date, 0)).toBe(10_000);
  });

  it("measures an HTTP-date from now() when the response has no (valid) Date header", () => {
    expect(parseRetryAfter("Tue, 14 Nov 2023 22:13:22 GMT", null, now)).toBe(2_000);
    expect(parseRetryAfter("Tue, 14 Nov 2023 22:13:22 GMT", "yesterday", now)).toBe(2_000);
  });

  it("makes a date in the past 0, and anything else undefined", () => {
    expect(parseRetryAfter("Tue, 14 Nov 2023 22:00:00 GMT", null, now)).toBe(0);
    for (const value of ["", "-1", "1.5", "soon", "2023-11-14T22:13:25Z", "1e3"]) {
      expect(parseRetryAfter(value, null, now), value).toBeUndefined();
    }
    expect(parseRetryAfter(null, null, now)).toBeUndefined();
  });
});
