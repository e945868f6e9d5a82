import { expect } from "vitest";
import { claimKey, expectCompletedRecord } from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { bytesOf, newKey } from "../ids.js";

export const expiresAfterTtl: StoreCase = {
  name: "records expire after their TTL, and complete sets the TTL from completion time",
  async run({ open, timing, advance }) {
    const store = await open();
    const { leaseMs, ttlMs, marginMs, longTtlMs } = timing;
    const expiring = { leaseMs, ttlMs };

    const completed = await claimKey(store, newKey(), expiring);
    expect(await store.complete(completed.key, completed.token, bytesOf("c"), ttlMs), "complete").toBe(true);
    const inFlight = await claimKey(store, newKey(), expiring);
    // Completed at once with a longer TTL: complete must replace the claim's TTL, not keep it.
    const lengthened = await claimKey(store, newKey(), expiring);
    const lengthenedResponse = bytesOf("lengthened");
    expect(
      await store.complete(lengthened.key, lengthened.token, lengthenedResponse, 3 * ttlMs),
      "complete",
    ).toBe(true);
    // Completed one TTL after its claim: its TTL must run from completion, not from the claim.
    const late = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });

    await advance(ttlMs);
    const lateResponse = bytesOf("late");
    expect(
      await store.complete(late.key, late.token, lateResponse, ttlMs),
      "complete one TTL after the claim",
    ).toBe(true);
    await advance(marginMs);

    // The survivors first: in real time they have the least slack.
    expectCompletedRecord(
      await store.get(late.key),
      late.fingerprint,
      lateResponse,
      ttlMs - marginMs,
      "get, late",
    );
    const lengthenedRecord = await store.get(lengthened.key);
    expectCompletedRecord(
      lengthenedRecord,
      lengthened.fingerprint,
      lengthenedResponse,
      2 * ttlMs,
      "get, longer TTL",
    );

    expect(await store.get(completed.key), "get of a completed record past its TTL").toBeNull();
    expect(await store.get(inFlight.key), "get of an in-flight record past its TTL").toBeNull();
    // claimKey asserts { state: "claimed", takeover: false } with allowTakeover false: the keys count as absent.
    await claimKey(store, completed.key, expiring);
    await claimKey(store, inFlight.key, expiring);
  },
};
