import { expect } from "vitest";
import {
  beginAsNewcomer,
  claimKey,
  expectCompletedRecord,
  expectCompletedResult,
  expectInFlightRecord,
  expectInFlightResult,
} from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { bytesOf, newFingerprint, newKey, newToken } from "../ids.js";

export const extendRenewsLease: StoreCase = {
  name: "extend by the owner renews the lease from now",
  async run({ open, timing, advance }) {
    const store = await open();
    const { leaseMs, marginMs, longLeaseMs, longTtlMs } = timing;
    const extended = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });
    // The control proves time really moved past the original lease: the same claim without extend expires.
    const control = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });

    await advance(leaseMs / 2);
    const renewedMs = 4 * leaseMs;
    expect(await store.extend(extended.key, extended.token, renewedMs), "extend by the owner").toBe(true);
    const max = { leaseMs: renewedMs, ttlMs: longTtlMs };
    expectInFlightRecord(await store.get(extended.key), extended, max, "get after extend");

    await advance(leaseMs / 2 + marginMs);
    const long = { leaseMs: longLeaseMs, ttlMs: longTtlMs };
    const takeover = await beginAsNewcomer(store, control.key, long, true);
    expect(takeover, "begin with allowTakeover on the unextended control").toEqual({
      state: "claimed",
      takeover: true,
    });
    const duplicate = await beginAsNewcomer(store, extended.key, long, true);
    expectInFlightResult(
      duplicate,
      extended.fingerprint,
      renewedMs,
      "begin with allowTakeover past the original lease end of an extended claim",
    );
    expectInFlightRecord(await store.get(extended.key), extended, max, "get past the original lease end");
    expect(await store.extend(extended.key, extended.token, renewedMs), "a second extend").toBe(true);
  },
};

export const takesOverExpiredLease: StoreCase = {
  name: "an expired lease is taken over only with allowTakeover, and the stale owner is fenced out",
  async run({ open, timing, advance }) {
    const store = await open();
    const { leaseMs, marginMs, longLeaseMs, longTtlMs } = timing;
    const long = { leaseMs: longLeaseMs, ttlMs: longTtlMs };
    const stale = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });
    const keeper = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });
    await advance(leaseMs + marginMs);

    const expiredMax = { leaseMs: "expired" as const, ttlMs: longTtlMs };
    expectInFlightRecord(await store.get(stale.key), stale, expiredMax, "get after the lease expired");
    const refused = await beginAsNewcomer(store, stale.key, long, false);
    expectInFlightResult(
      refused,
      stale.fingerprint,
      "expired",
      "begin without allowTakeover on an expired lease",
    );

    const successor = { key: stale.key, token: newToken(), fingerprint: newFingerprint() };
    const takeover = await store.begin(stale.key, { ...successor, ...long, allowTakeover: true });
    expect(takeover, "begin with allowTakeover on an expired lease").toEqual({
      state: "claimed",
      takeover: true,
    });
    expectInFlightRecord(await store.get(stale.key), successor, long, "get after the takeover");

    const staleResponse = bytesOf("the stale owner's response");
    expect(await store.complete(stale.key, stale.token, staleResponse, longTtlMs), "stale complete").toBe(
      false,
    );
    expect(await store.extend(stale.key, stale.token, longLeaseMs), "stale extend").toBe(false);
    expect(await store.release(stale.key, stale.token), "stale release").toBe(false);
    expectInFlightRecord(
      await store.get(stale.key),
      successor,
      long,
      "get after the stale owner's operations",
    );

    const response = bytesOf("the new owner's response");
    expect(
      await store.complete(stale.key, successor.token, response, longTtlMs),
      "the new owner's complete",
    ).toBe(true);
    const begun = await beginAsNewcomer(store, stale.key, long, true);
    expectCompletedResult(begun, successor.fingerprint, response, "begin after the new owner completed");

    // Nobody took the other key over, so its expired lease still belongs to its owner.
    const kept = bytesOf("completed late");
    expect(
      await store.complete(keeper.key, keeper.token, kept, longTtlMs),
      "complete, expired lease, no takeover",
    ).toBe(true);
    expectCompletedRecord(
      await store.get(keeper.key),
      keeper.fingerprint,
      kept,
      longTtlMs,
      "get of the late one",
    );
  },
};

export const neverTakesOverCompleted: StoreCase = {
  name: "a completed record is never taken over, even with allowTakeover after its lease time",
  async run({ open, timing, advance }) {
    const store = await open();
    const { leaseMs, marginMs, longLeaseMs, longTtlMs } = timing;
    const owner = await claimKey(store, newKey(), { leaseMs, ttlMs: longTtlMs });
    const response = bytesOf("done");
    expect(await store.complete(owner.key, owner.token, response, longTtlMs), "complete by the owner").toBe(
      true,
    );
    await advance(leaseMs + marginMs);

    const long = { leaseMs: longLeaseMs, ttlMs: longTtlMs };
    const withTakeover = await beginAsNewcomer(store, owner.key, long, true);
    expectCompletedResult(
      withTakeover,
      owner.fingerprint,
      response,
      "begin with allowTakeover after the lease time",
    );
    const without = await beginAsNewcomer(store, owner.key, long, false);
    expectCompletedResult(
      without,
      owner.fingerprint,
      response,
      "begin without allowTakeover after the lease time",
    );
    expectCompletedRecord(
      await store.get(owner.key),
      owner.fingerprint,
      response,
      longTtlMs,
      "get afterwards",
    );
  },
};
