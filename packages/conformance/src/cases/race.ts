import type { BeginResult, IdempotencyStore } from "@idempotency/core";
import { expect } from "vitest";
import { claimKey, expectInFlightRecord, expectInFlightResult } from "../assertions.js";
import type { StoreCase } from "../harness.js";
import { newFingerprint, newKey, newToken } from "../ids.js";

/** Races run on this many keys at once: one lost race in many is enough to fail the case. */
const RACE_KEYS = 20;
const TAKEOVER_RACE_KEYS = 10;

interface Contender {
  token: string;
  fingerprint: string;
}

interface RaceArgs {
  leaseMs: number;
  ttlMs: number;
  allowTakeover: boolean;
}

/**
 * Starts `concurrency` begins on each key, round-robin over `stores`, every one of them before any is
 * awaited, so they all overlap. Each contender has its own token and fingerprint, to identify the winner.
 */
async function race(
  stores: IdempotencyStore[],
  keys: string[],
  concurrency: number,
  args: RaceArgs,
): Promise<Array<{ key: string; contenders: Contender[]; results: BeginResult[] }>> {
  const started = keys.map((key) => {
    const contenders = Array.from({ length: concurrency }, () => ({
      token: newToken(),
      fingerprint: newFingerprint(),
    }));
    const results = contenders.map((contender, i) =>
      (stores[i % stores.length] as IdempotencyStore).begin(key, { ...contender, ...args }),
    );
    return { key, contenders, results };
  });
  return Promise.all(
    started.map(async ({ key, contenders, results }) => ({
      key,
      contenders,
      results: await Promise.all(results),
    })),
  );
}

/** Asserts exactly one contender claimed each key and every other one saw the winner's claim. */
async function expectOneWinnerPerKey(
  stores: IdempotencyStore[],
  outcomes: Awaited<ReturnType<typeof race>>,
  args: RaceArgs & { takeover: boolean },
): Promise<void> {
  for (const [k, { key, contenders, results }] of outcomes.entries()) {
    const winners = results.flatMap((result, i) => (result.state === "claimed" ? [i] : []));
    expect(
      winners.length,
      `exactly one winner among ${contenders.length} concurrent begins on race key ${k + 1}/${outcomes.length}`,
    ).toBe(1);
    const winnerIndex = winners[0] as number;
    const winner = contenders[winnerIndex] as Contender;
    expect(results[winnerIndex], "the winner's begin").toEqual({ state: "claimed", takeover: args.takeover });
    for (const [i, result] of results.entries()) {
      if (i === winnerIndex) continue;
      expectInFlightResult(
        result,
        winner.fingerprint,
        args.leaseMs,
        `loser ${i}'s begin must report the winner`,
      );
    }
    const record = await (stores[(k + 1) % stores.length] as IdempotencyStore).get(key);
    expectInFlightRecord(record, { key, ...winner }, args, "get after the race must show the winner");
  }
}

export const oneWinnerAmongConcurrentBegins: StoreCase = {
  name: "exactly one winner among concurrent begins spread over independent instances",
  async run({ openMany, instances, concurrency, timing }) {
    const stores = await openMany(instances);
    const args = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs, allowTakeover: false };
    const keys = Array.from({ length: RACE_KEYS }, newKey);
    const outcomes = await race(stores, keys, concurrency, args);
    await expectOneWinnerPerKey(stores, outcomes, { ...args, takeover: false });
  },
};

export const oneWinnerAmongConcurrentTakeovers: StoreCase = {
  name: "exactly one takeover among concurrent begins on an expired lease",
  async run({ openMany, instances, concurrency, timing, advance }) {
    const stores = await openMany(instances);
    const first = stores[0] as IdempotencyStore;
    const keys = Array.from({ length: TAKEOVER_RACE_KEYS }, newKey);
    const expiring = { leaseMs: timing.leaseMs, ttlMs: timing.longTtlMs };
    await Promise.all(keys.map((key) => claimKey(first, key, expiring)));
    await advance(timing.leaseMs + timing.marginMs);

    const args = { leaseMs: timing.longLeaseMs, ttlMs: timing.longTtlMs, allowTakeover: true };
    const outcomes = await race(stores, keys, concurrency, args);
    await expectOneWinnerPerKey(stores, outcomes, { ...args, takeover: true });
  },
};
