import { expect } from "vitest";
import { claimKey, expectInFlightRecord } from "../assertions.js";
import { isStoreError } from "../checked-store.js";
import type { StoreCase } from "../harness.js";
import { bytesOf, newFingerprint, newKey, newToken } from "../ids.js";

/** A deadline no healthy store comes near: the case checks the argument is accepted, not that it binds. */
const GENEROUS = { timeoutMs: 60_000 } as const;

export const acceptsCallerDeadline: StoreCase = {
  name: "every method takes the caller's deadline as its last argument and answers as usual",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const key = newKey();
    const owner = { key, token: newToken(), fingerprint: newFingerprint() };
    const args = { ...owner, ...durations, allowTakeover: false };
    expect(await store.begin(key, args, GENEROUS), "begin").toEqual({ state: "claimed", takeover: false });
    expect(await store.extend(key, owner.token, durations.leaseMs, GENEROUS), "extend").toBe(true);
    expectInFlightRecord(await store.get(key, GENEROUS), owner, durations, "get");
    const response = bytesOf("with a deadline");
    expect(await store.complete(key, owner.token, response, durations.ttlMs, GENEROUS), "complete").toBe(
      true,
    );
    expect(await store.delete(key, GENEROUS), "delete").toBe(true);

    const other = await claimKey(store, newKey(), durations);
    expect(await store.release(other.key, other.token, GENEROUS), "release").toBe(true);
    expect(await store.get(other.key, GENEROUS), "get after release").toBeNull();
  },
};

/** The caller's deadline in the stall case, and how long the store stalls: well past it. */
const DEADLINE_MS = 200;
const STALL_MS = 1_000;
/** How long after the stall the case waits before it looks: the late command has run by then. */
const AFTER_STALL_MS = 300;

export const neverAppliesLateBegin: StoreCase = {
  name: "a begin that misses the caller's deadline (the store stalled) fails and never applies later",
  async run({ open, timing, stall, sleep }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    // Learn whatever the store learns on its first call (a server clock) before the stall.
    expect(await store.get(newKey()), "get before the stall").toBeNull();
    const key = newKey();
    const args = { token: newToken(), fingerprint: newFingerprint(), ...durations, allowTakeover: false };

    const stalledAt = Date.now();
    await stall(STALL_MS);
    const outcome = await store.begin(key, args, { timeoutMs: DEADLINE_MS }).then(
      (result) => ({ result }),
      (error: unknown) => ({ error }),
    );
    expect(
      "error" in outcome && isStoreError(outcome.error),
      `a begin that could not apply within its ${DEADLINE_MS} ms deadline must fail with IdempotencyStoreError ` +
        `(got ${JSON.stringify("result" in outcome ? outcome.result : String(outcome.error))})`,
    ).toBe(true);

    await sleep(Math.max(0, stalledAt + STALL_MS + AFTER_STALL_MS - Date.now()));
    expect(
      await store.get(key),
      "the begin the caller gave up on applied once the store resumed: the key is locked for a whole lease",
    ).toBeNull();
    expect(await store.begin(key, { ...args, token: newToken() }), "a retry after the stall").toEqual({
      state: "claimed",
      takeover: false,
    });
  },
};
