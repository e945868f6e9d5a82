import { expect } from "vitest";
import {
  beginAsNewcomer,
  claimKey,
  expectCompletedRecord,
  expectCompletedResult,
  expectInFlightRecord,
} from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { bytesOf, newKey, newToken } from "../ids.js";

export const fencesByOwnerToken: StoreCase = {
  name: "complete, extend and release are fenced by the owner token",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const owner = await claimKey(store, newKey(), durations);
    const intruder = newToken();

    expect(
      await store.complete(owner.key, intruder, bytesOf("intruder"), durations.ttlMs),
      "complete, wrong token",
    ).toBe(false);
    // A huge lease makes an unfenced renewal visible in leaseRemainingMs.
    expect(await store.extend(owner.key, intruder, 10 * durations.leaseMs), "extend, wrong token").toBe(
      false,
    );
    expect(await store.release(owner.key, intruder), "release, wrong token").toBe(false);
    expectInFlightRecord(await store.get(owner.key), owner, durations, "get after wrong-token operations");

    const response = bytesOf("the owner's response");
    expect(
      await store.complete(owner.key, owner.token, response, durations.ttlMs),
      "complete by the owner",
    ).toBe(true);
    const again = bytesOf("a second response");
    expect(await store.complete(owner.key, owner.token, again, durations.ttlMs), "second complete").toBe(
      false,
    );
    expect(
      await store.complete(owner.key, intruder, again, durations.ttlMs),
      "complete after completion",
    ).toBe(false);
    expect(await store.extend(owner.key, owner.token, durations.leaseMs), "extend after completion").toBe(
      false,
    );
    expect(await store.release(owner.key, owner.token), "release after completion").toBe(false);
    const record = await store.get(owner.key);
    expectCompletedRecord(
      record,
      owner.fingerprint,
      response,
      durations.ttlMs,
      "get after the late operations",
    );
    const begun = await beginAsNewcomer(store, owner.key, durations, true);
    expectCompletedResult(begun, owner.fingerprint, response, "begin after the late operations");

    const released = await claimKey(store, newKey(), durations);
    expect(await store.release(released.key, released.token), "release by the owner").toBe(true);
    expect(await store.get(released.key), "get after release").toBeNull();
    expect(await store.release(released.key, released.token), "second release").toBe(false);
    await claimKey(store, released.key, durations);

    const absent = newKey();
    expect(
      await store.complete(absent, intruder, bytesOf("x"), durations.ttlMs),
      "complete, absent key",
    ).toBe(false);
    expect(await store.extend(absent, intruder, durations.leaseMs), "extend, absent key").toBe(false);
    expect(await store.release(absent, intruder), "release, absent key").toBe(false);
    expect(await store.get(absent), "get after operations on an absent key").toBeNull();
  },
};
