import { expect } from "vitest";
import { beginAsNewcomer, claimKey, expectInFlightRecord, expectInFlightResult } from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { newFingerprint, newKey, newToken } from "../ids.js";

export const claimsAbsentKey: StoreCase = {
  name: "begin on an absent key claims it, and get shows the in-flight record",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const owner = await claimKey(store, newKey(), durations);
    expectInFlightRecord(await store.get(owner.key), owner, durations, "get after the claim");

    // takeover reports replacing a record; with nothing to replace it is false even when allowed.
    const allowed = await beginAsNewcomer(store, newKey(), durations, true);
    expect(allowed, "begin with allowTakeover on an absent key").toEqual({
      state: "claimed",
      takeover: false,
    });
  },
};

export const reportsLiveInFlight: StoreCase = {
  name: "begin on a live in-flight record reports it with the first fingerprint and never claims it",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const owner = await claimKey(store, newKey(), durations);

    const otherFingerprint = await beginAsNewcomer(store, owner.key, durations, false);
    expectInFlightResult(
      otherFingerprint,
      owner.fingerprint,
      durations.leaseMs,
      "begin with another fingerprint",
    );
    const sameFingerprint = await store.begin(owner.key, {
      token: newToken(),
      fingerprint: owner.fingerprint,
      ...durations,
      allowTakeover: true,
    });
    expectInFlightResult(
      sameFingerprint,
      owner.fingerprint,
      durations.leaseMs,
      "begin with the same fingerprint and allowTakeover while the lease is live",
    );
    const yetAnother = await store.begin(owner.key, {
      token: newToken(),
      fingerprint: newFingerprint(),
      ...durations,
      allowTakeover: true,
    });
    expectInFlightResult(yetAnother, owner.fingerprint, durations.leaseMs, "a third begin");
    expectInFlightRecord(await store.get(owner.key), owner, durations, "get after the duplicates");
  },
};
