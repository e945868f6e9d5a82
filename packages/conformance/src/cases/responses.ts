import { randomBytes } from "node:crypto";
import type { IdempotencyStore } from "@idempotency/core";
import { expect } from "vitest";
import { beginAsNewcomer, claimKey, expectCompletedRecord, expectCompletedResult } from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { newKey } from "../ids.js";

const MIB = 1024 * 1024;

/** Byte sequences a text-based or C-string-based store would mangle. */
function binarySamples(): Record<string, Uint8Array> {
  const backing = Uint8Array.from(randomBytes(64));
  return {
    "every byte 0..255": Uint8Array.from({ length: 256 }, (_, i) => i),
    "NUL bytes": Uint8Array.from([0, 0, 0x41, 0, 0x42, 0, 0]),
    // A lone continuation, truncated sequences, a UTF-16 surrogate, an overlong NUL, and bytes never valid.
    "invalid UTF-8": Uint8Array.from([
      0x80, 0xc3, 0x28, 0xe2, 0x28, 0xa1, 0xed, 0xa0, 0x80, 0xc0, 0x80, 0xfe, 0xff,
    ]),
    "1 MiB of random bytes": Uint8Array.from(randomBytes(MIB)),
    // Stores that write `view.buffer` instead of the view store the whole backing buffer.
    "a view into a larger buffer": new Uint8Array(backing.buffer, 7, 32),
    // Node's Buffer#slice is a view, not a copy: a store that "copies" with slice() keeps the caller's memory.
    "a Node Buffer": randomBytes(300),
    // A small Buffer.from lives in Node's shared 8 KiB pool, beside other buffers.
    "a pooled Node Buffer": Buffer.from("a pooled response body"),
  };
}

/** Claims a fresh key, completes it with `response` and returns what is needed to read it back. */
async function storeResponse(
  store: IdempotencyStore,
  response: Uint8Array | null,
  ttlMs: number,
  leaseMs: number,
) {
  const owner = await claimKey(store, newKey(), { leaseMs, ttlMs });
  expect(await store.complete(owner.key, owner.token, response, ttlMs), "complete by the owner").toBe(true);
  return owner;
}

export const storesResponsesExactly: StoreCase = {
  name: "complete stores the response bytes exactly: binary-safe up to 1 MiB",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };
    await Promise.all(
      Object.entries(binarySamples()).map(async ([what, response]) => {
        const expected = Uint8Array.from(response);
        const owner = await storeResponse(store, response, durations.ttlMs, durations.leaseMs);
        // The caller may reuse its buffer once complete has answered; the stored response must not change.
        response.fill(0x5a);
        const begun = await beginAsNewcomer(store, owner.key, durations, true);
        expectCompletedResult(begun, owner.fingerprint, expected, `begin after completing with ${what}`);
        // Nor may a reader that changes the bytes it was given change what the next reader gets.
        if (begun.state === "completed") begun.response?.fill(0xa5);
        const record = await store.get(owner.key);
        expectCompletedRecord(record, owner.fingerprint, expected, durations.ttlMs, `get of ${what}`);
      }),
    );
  },
};

export const keepsNullAndEmptyResponses: StoreCase = {
  name: "a null response stays null and an empty response stays an empty Uint8Array",
  async run({ open, timing }) {
    const store = await open();
    const durations = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs };

    const withoutBody = await storeResponse(store, null, durations.ttlMs, durations.leaseMs);
    const begunNull = await beginAsNewcomer(store, withoutBody.key, durations, false);
    expect(begunNull, "begin after completing with null").toEqual({
      state: "completed",
      fingerprint: withoutBody.fingerprint,
      response: null,
    });
    const recordNull = await store.get(withoutBody.key);
    expectCompletedRecord(recordNull, withoutBody.fingerprint, null, durations.ttlMs, "get after null");

    const empty = await storeResponse(store, new Uint8Array(0), durations.ttlMs, durations.leaseMs);
    const begunEmpty = await beginAsNewcomer(store, empty.key, durations, false);
    expectCompletedResult(
      begunEmpty,
      empty.fingerprint,
      new Uint8Array(0),
      "begin after completing with empty bytes",
    );
    const recordEmpty = await store.get(empty.key);
    expectCompletedRecord(
      recordEmpty,
      empty.fingerprint,
      new Uint8Array(0),
      durations.ttlMs,
      "get of empty bytes",
    );
  },
};
