import { describe, expect, it } from "vitest";
import { decideBegin, type HeldRecord } from "../src/index.js";

const now = 1_000_000;
const inFlight = (leaseUntil: number, expiresAt = now + 60_000): HeldRecord => ({
  fingerprint: "f",
  token: "owner",
  leaseUntil,
  expiresAt,
  response: null,
});
const completed: HeldRecord = {
  fingerprint: "f",
  token: null,
  leaseUntil: 0,
  expiresAt: now + 60_000,
  response: new Uint8Array([1, 2]),
};

describe("decideBegin", () => {
  it("claims when there is no record, or only an expired one", () => {
    expect(decideBegin(undefined, now, false)).toEqual({ state: "claimed", takeover: false });
    expect(decideBegin({ ...completed, expiresAt: now }, now, false)).toEqual({
      state: "claimed",
      takeover: false,
    });
    expect(decideBegin(inFlight(now + 5, now), now, false)).toEqual({ state: "claimed", takeover: false });
  });

  it("returns a completed record with its response", () => {
    expect(decideBegin(completed, now, true)).toEqual({
      state: "completed",
      fingerprint: "f",
      response: new Uint8Array([1, 2]),
    });
  });

  it("returns a live lease as in flight, with what remains of it", () => {
    expect(decideBegin(inFlight(now + 250), now, true)).toEqual({
      state: "in-flight",
      fingerprint: "f",
      leaseRemainingMs: 250,
    });
  });

  it("takes over an expired lease only when allowed; otherwise reports it in flight with 0 ms left", () => {
    expect(decideBegin(inFlight(now - 1), now, true)).toEqual({ state: "claimed", takeover: true });
    expect(decideBegin(inFlight(now), now, true)).toEqual({ state: "claimed", takeover: true });
    expect(decideBegin(inFlight(now - 1), now, false)).toEqual({
      state: "in-flight",
      fingerprint: "f",
      leaseRemainingMs: 0,
    });
  });
});
