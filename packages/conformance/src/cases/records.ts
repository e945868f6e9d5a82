import type { IdempotencyStore } from "@idempotency/core";
import { expect } from "vitest";
import {
  beginAsNewcomer,
  claimKey,
  expectCompletedRecord,
  expectCompletedResult,
  expectInFlightRecord,
  expectInFlightResult,
} from "../assertions.js";
import { isStoreError } from "../checked-store.js";
import type { StoreCase } from "../harness.js";
import { bytesOf, newKey, newToken } from "../ids.js";

/** `key` with its hex digit at `index` changed: a neighbour that a truncating or prefix-matching store confuses. */
function neighbourOf(key: string, index: number): string {
  const digit = key[index] === "0" ? "1" : "0";
  return key.slice(0, index) + digit + key.slice(index + 1);
}

export const keepsKeysIndependent: StoreCase = {
  name: "operations on one key never affect another",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const keyA = newKey();
    const a = await claimKey(store, keyA, durations);
    const b = await claimKey(store, neighbourOf(keyA, keyA.length - 1), durations);
    const c = await claimKey(store, neighbourOf(keyA, 0), durations);

    const responseA = bytesOf("A");
    expect(await store.complete(a.key, a.token, responseA, durations.ttlMs), "complete A").toBe(true);
    expectInFlightRecord(await store.get(b.key), b, durations, "B after completing A");
    expect(await store.release(b.key, b.token), "release B").toBe(true);
    expectCompletedRecord(
      await store.get(a.key),
      a.fingerprint,
      responseA,
      durations.ttlMs,
      "A after releasing B",
    );
    expectInFlightRecord(await store.get(c.key), c, durations, "C after releasing B");

    const b2 = await claimKey(store, b.key, durations);
    expect(await store.extend(c.key, c.token, durations.leaseMs), "extend C").toBe(true);
    expect(await store.delete(a.key), "delete A").toBe(true);
    expectInFlightRecord(await store.get(b2.key), b2, durations, "B after deleting A");
    expectInFlightRecord(await store.get(c.key), c, durations, "C after deleting A");
    expect(
      await store.complete(b2.key, a.token, responseA, durations.ttlMs),
      "complete B with A's token",
    ).toBe(false);
    expect(await store.get(a.key), "A after all").toBeNull();
  },
};

export const inspectsAndDeletesRecords: StoreCase = {
  name: "get and delete inspect and administer records",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const absent = newKey();
    expect(await store.get(absent), "get on an absent key").toBeNull();
    expect(await store.delete(absent), "delete on an absent key").toBe(false);

    const owner = await claimKey(store, newKey(), durations);
    const response = bytesOf("inspected");
    expect(await store.complete(owner.key, owner.token, response, durations.ttlMs), "complete").toBe(true);
    expectCompletedRecord(
      await store.get(owner.key),
      owner.fingerprint,
      response,
      durations.ttlMs,
      "get, completed",
    );
    expect(await store.delete(owner.key), "delete of a completed record").toBe(true);
    expect(await store.get(owner.key), "get after delete").toBeNull();
    expect(await store.delete(owner.key), "a second delete").toBe(false);

    const reclaimed = await claimKey(store, owner.key, durations);
    expect(await store.delete(reclaimed.key), "delete of an in-flight record").toBe(true);
    const late = bytesOf("late");
    expect(
      await store.complete(reclaimed.key, reclaimed.token, late, durations.ttlMs),
      "complete after delete",
    ).toBe(false);
    expect(await store.extend(reclaimed.key, reclaimed.token, durations.leaseMs), "extend after delete").toBe(
      false,
    );
    expect(await store.release(reclaimed.key, reclaimed.token), "release after delete").toBe(false);
    expect(await store.get(reclaimed.key), "get after the deleted owner's operations").toBeNull();
  },
};

export const sharesDataAcrossInstances: StoreCase = {
  name: "independent instances over the same data see and change each other's records",
  async run({ openMany, timing }) {
    const [first, second] = (await openMany(2)) as [IdempotencyStore, IdempotencyStore];
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };

    const completed = await claimKey(first, newKey(), durations);
    expectInFlightRecord(await second.get(completed.key), completed, durations, "get through instance 2");
    const duplicate = await beginAsNewcomer(second, completed.key, durations, true);
    expectInFlightResult(duplicate, completed.fingerprint, durations.leaseMs, "begin through instance 2");
    expect(await second.extend(completed.key, completed.token, durations.leaseMs), "extend through 2").toBe(
      true,
    );
    const response = bytesOf("completed through instance 2");
    expect(
      await second.complete(completed.key, completed.token, response, durations.ttlMs),
      "complete via 2",
    ).toBe(true);
    const begun = await beginAsNewcomer(first, completed.key, durations, false);
    expectCompletedResult(begun, completed.fingerprint, response, "begin through instance 1");

    const released = await claimKey(first, newKey(), durations);
    expect(await second.release(released.key, released.token), "release through instance 2").toBe(true);
    await claimKey(first, released.key, durations);
    expect(await second.delete(released.key), "delete through instance 2").toBe(true);
    expect(await first.get(released.key), "get through instance 1 after the delete").toBeNull();
  },
};

/** How long a method of a closed instance may take to answer or fail before it counts as hanging. */
const CLOSED_ANSWER_TIMEOUT_MS = 2_000;

function settleWithin<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} neither answered nor failed within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export const answersOrThrowsStoreErrorAfterClose: StoreCase = {
  name: "after close(), every method answers or throws IdempotencyStoreError",
  async run({ open, closeNow, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    const owner = await claimKey(store, newKey(), durations);
    await closeNow(store);

    const calls: Array<[string, () => Promise<unknown>]> = [
      ["begin", () => beginAsNewcomer(store, owner.key, durations, false)],
      ["complete", () => store.complete(owner.key, owner.token, bytesOf("x"), durations.ttlMs)],
      ["extend", () => store.extend(owner.key, owner.token, durations.leaseMs)],
      ["release", () => store.release(owner.key, newToken())],
      ["get", () => store.get(owner.key)],
      ["delete", () => store.delete(newKey())],
    ];
    for (const [method, call] of calls) {
      try {
        await settleWithin(call(), CLOSED_ANSWER_TIMEOUT_MS, `${method}() after close()`);
      } catch (error) {
        // The checked instance already turned any other error into a failure naming the method.
        if (!isStoreError(error)) throw error;
      }
    }
  },
};
