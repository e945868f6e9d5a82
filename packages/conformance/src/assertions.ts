import type { BeginResult, IdempotencyStore, StoredRecord } from "@idempotency/core";
import { expect } from "vitest";
import { newFingerprint, newToken } from "./ids.js";

/** A claim a case made: who owns which key with which fingerprint. */
export interface Owner {
  key: string;
  token: string;
  fingerprint: string;
}

/** Asserts a remaining time has started and not run out: in (0, max]. */
export function expectRemaining(value: unknown, max: number, what: string): void {
  expect(value, `${what} must be a number`).toBeTypeOf("number");
  expect(value, `${what} must be > 0`).toBeGreaterThan(0);
  expect(value, `${what} must be <= ${max}`).toBeLessThanOrEqual(max);
}

/** Asserts `actual` is a Uint8Array with exactly the bytes of `expected`, naming the first difference. */
export function expectSameBytes(actual: unknown, expected: Uint8Array, what: string): void {
  expect(actual, `${what} must be a Uint8Array`).toBeInstanceOf(Uint8Array);
  const bytes = actual as Uint8Array;
  expect(bytes.byteLength, `${what}: byte length`).toBe(expected.byteLength);
  const differs =
    Buffer.compare(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), expected) !== 0;
  if (differs) {
    const index = bytes.findIndex((byte, i) => byte !== expected[i]);
    expect.fail(`${what}: byte ${index} is ${bytes[index]}, expected ${expected[index]}`);
  }
}

function expectResponse(actual: unknown, expected: Uint8Array | null, what: string): void {
  if (expected === null) expect(actual, `${what}: response`).toBeNull();
  else expectSameBytes(actual, expected, `${what}: response`);
}

/** Claims `key` (absent, so the claim must succeed) with a fresh token and fingerprint. */
export async function claimKey(
  store: IdempotencyStore,
  key: string,
  durations: { leaseMs: number; ttlMs: number },
): Promise<Owner> {
  const owner = { key, token: newToken(), fingerprint: newFingerprint() };
  const result = await store.begin(key, { ...owner, ...durations, allowTakeover: false });
  expect(result, "begin on an absent key must claim it").toEqual({ state: "claimed", takeover: false });
  return owner;
}

/** Calls begin for a newcomer (fresh token and fingerprint) with long durations, as a duplicate request would. */
export function beginAsNewcomer(
  store: IdempotencyStore,
  key: string,
  durations: { leaseMs: number; ttlMs: number },
  allowTakeover: boolean,
): Promise<BeginResult> {
  return store.begin(key, { token: newToken(), fingerprint: newFingerprint(), ...durations, allowTakeover });
}

/**
 * Asserts begin reported an in-flight record with `fingerprint`; its lease is live within `maxLeaseMs`,
 * or exactly 0 when `maxLeaseMs` is `"expired"`.
 */
export function expectInFlightResult(
  result: BeginResult,
  fingerprint: string,
  maxLeaseMs: number | "expired",
  what: string,
): void {
  expect(result, what).toEqual({ state: "in-flight", fingerprint, leaseRemainingMs: expect.any(Number) });
  const { leaseRemainingMs } = result as { leaseRemainingMs: number };
  if (maxLeaseMs === "expired") expect(leaseRemainingMs, `${what}: leaseRemainingMs`).toBe(0);
  else expectRemaining(leaseRemainingMs, maxLeaseMs, `${what}: leaseRemainingMs`);
}

/** Asserts begin reported a completed record with exactly `fingerprint` and `response`. */
export function expectCompletedResult(
  result: BeginResult,
  fingerprint: string,
  response: Uint8Array | null,
  what: string,
): void {
  const { response: actual, ...rest } = result as { response?: unknown };
  expect(rest, what).toEqual({ state: "completed", fingerprint });
  expect(result, `${what}: must carry a response field`).toHaveProperty("response");
  expectResponse(actual, response, what);
}

/**
 * Asserts get showed the in-flight record of `owner`, with its TTL within `max.ttlMs` and its lease live
 * within `max.leaseMs`, or exactly 0 when `max.leaseMs` is `"expired"`.
 */
export function expectInFlightRecord(
  record: StoredRecord | null,
  owner: Owner,
  max: { leaseMs: number | "expired"; ttlMs: number },
  what: string,
): void {
  expect(record, what).toEqual({
    state: "in-flight",
    fingerprint: owner.fingerprint,
    token: owner.token,
    leaseRemainingMs: expect.any(Number),
    ttlRemainingMs: expect.any(Number),
  });
  const { leaseRemainingMs, ttlRemainingMs } = record as { leaseRemainingMs: number; ttlRemainingMs: number };
  if (max.leaseMs === "expired") expect(leaseRemainingMs, `${what}: leaseRemainingMs`).toBe(0);
  else expectRemaining(leaseRemainingMs, max.leaseMs, `${what}: leaseRemainingMs`);
  expectRemaining(ttlRemainingMs, max.ttlMs, `${what}: ttlRemainingMs`);
}

/** Asserts get showed a completed record with exactly `fingerprint` and `response`, its TTL within `maxTtlMs`. */
export function expectCompletedRecord(
  record: StoredRecord | null,
  fingerprint: string,
  response: Uint8Array | null,
  maxTtlMs: number,
  what: string,
): void {
  expect(record, `${what}: must be a record`).not.toBeNull();
  const { response: actual, ...rest } = record as { response?: unknown };
  expect(rest, what).toEqual({ state: "completed", fingerprint, ttlRemainingMs: expect.any(Number) });
  expect(record, `${what}: must carry a response field`).toHaveProperty("response");
  expectResponse(actual, response, what);
  expectRemaining((record as { ttlRemainingMs: number }).ttlRemainingMs, maxTtlMs, `${what}: ttlRemainingMs`);
}
