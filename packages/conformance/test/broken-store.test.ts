import type { IdempotencyStore } from "@idempotency/core";
import { describe, expect, it } from "vitest";
import {
  answersOrThrowsStoreErrorAfterClose,
  expiresAfterTtl,
  extendRenewsLease,
  fencesByOwnerToken,
  keepsKeysIndependent,
  neverAppliesLateBegin,
  neverTakesOverCompleted,
  oneWinnerAmongConcurrentBegins,
  oneWinnerAmongConcurrentTakeovers,
  storeCases,
  storesResponsesExactly,
  takesOverExpiredLease,
} from "../src/cases/index.js";
import { runStoreCase, type StoreCase } from "../src/harness.js";
import {
  CheckThenActStore,
  ClaimTimeTtlStore,
  ClaimTtlStore,
  CompletedTakeoverStore,
  EagerTakeoverStore,
  LateApplyingStore,
  RawErrorStore,
  SharedBytesStore,
  StaleExtendStore,
  StallingStore,
  TextStore,
  UnfencedStore,
} from "./support/broken-stores.js";
import { SimpleStore } from "./support/simple-store.js";

type StoreClass = new (now: () => number) => IdempotencyStore;

/** Runs one case against a fresh store on a controlled clock: the same code path describeStore runs. */
function runCase(storeCase: StoreCase, Store: StoreClass): Promise<void> {
  const clock = { t: 1_700_000_000_000 };
  const store = new Store(() => clock.t);
  return runStoreCase(storeCase, () => store, {
    advanceTime: (ms) => {
      clock.t += ms;
    },
  });
}

/** The names of the cases that fail against `Store`, in suite order. */
async function failingCases(Store: StoreClass): Promise<string[]> {
  const failing: string[] = [];
  for (const storeCase of storeCases) {
    try {
      await runCase(storeCase, Store);
    } catch {
      failing.push(storeCase.name);
    }
  }
  return failing;
}

describe("the suite catches broken stores", () => {
  it("passes every case on a correct store written independently of MemoryStore (the control)", async () => {
    expect(await failingCases(SimpleStore)).toEqual([]);
  });

  it("fails the exactly-one-winner case on a check-then-act store, on a controlled and on a real clock", async () => {
    await expect(runCase(oneWinnerAmongConcurrentBegins, CheckThenActStore)).rejects.toThrow(
      /exactly one winner/,
    );
    const realTime = new CheckThenActStore(() => Date.now());
    await expect(runStoreCase(oneWinnerAmongConcurrentBegins, () => realTime)).rejects.toThrow(
      /exactly one winner/,
    );
  });

  // Each broken store differs from the control by one hook, so each row shows which cases catch that bug.
  const expectations: Array<[string, StoreClass, StoreCase[]]> = [
    [
      "check-then-act begin",
      CheckThenActStore,
      [oneWinnerAmongConcurrentBegins, oneWinnerAmongConcurrentTakeovers],
    ],
    [
      "unfenced complete/extend/release",
      UnfencedStore,
      [fencesByOwnerToken, takesOverExpiredLease, keepsKeysIndependent],
    ],
    ["responses kept as UTF-8 text", TextStore, [storesResponsesExactly]],
    ["responses shared with readers", SharedBytesStore, [storesResponsesExactly]],
    ["takeover without allowTakeover", EagerTakeoverStore, [takesOverExpiredLease]],
    ["takeover of a completed record", CompletedTakeoverStore, [neverTakesOverCompleted]],
    ["extend that renews nothing", StaleExtendStore, [extendRenewsLease]],
    ["complete that keeps the claim's TTL", ClaimTtlStore, [expiresAfterTtl]],
    ["complete that counts its TTL from the claim", ClaimTimeTtlStore, [expiresAfterTtl]],
    ["plain errors instead of IdempotencyStoreError", RawErrorStore, [answersOrThrowsStoreErrorAfterClose]],
  ];
  for (const [flaw, Store, caught] of expectations) {
    it(`catches ${flaw}, in exactly the cases that cover it`, async () => {
      expect(await failingCases(Store)).toEqual(caught.map((storeCase) => storeCase.name));
    });
  }

  it("passes the deadline case on a store that refuses late commands, and fails it on one that applies them", async () => {
    const control = new StallingStore();
    await runStoreCase(neverAppliesLateBegin, () => control, { stall: (ms) => control.stall(ms) });
    const broken = new LateApplyingStore();
    await expect(
      runStoreCase(neverAppliesLateBegin, () => broken, { stall: (ms) => broken.stall(ms) }),
    ).rejects.toThrow(/the begin the caller gave up on applied once the store resumed/);
  });

  it("fails the fencing case on an unfenced store with a message naming the operation", async () => {
    await expect(runCase(fencesByOwnerToken, UnfencedStore)).rejects.toThrow(/complete, wrong token/);
  });
});
