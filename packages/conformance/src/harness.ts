import { IdempotencyOptionsError, type IdempotencyStore, wholeNumberOption } from "@idempotency/core";
import { checkedStore } from "./checked-store.js";
import {
  DEFAULT_CONCURRENCY,
  DEFAULT_INSTANCES,
  type DescribeStoreOptions,
  type StoreFactory,
} from "./options.js";
import { DEFAULT_REAL_TIME_LEASE_MS, type Timing, timingFor } from "./timing.js";

/** What a case gets to work with: instances of the store under test, time, and the suite's scale. */
export interface CaseContext {
  readonly timing: Timing;
  /** How many independent instances concurrency cases spread over. */
  readonly instances: number;
  /** How many begins a race fires at one key. */
  readonly concurrency: number;
  /** A new instance from the factory, checked against the error contract and closed when the case ends. */
  open(): Promise<IdempotencyStore>;
  /** `count` new instances, opened together. */
  openMany(count: number): Promise<IdempotencyStore[]>;
  /** Closes an instance opened by this case now, so the case can use it closed; it is not closed again. */
  closeNow(store: IdempotencyStore): Promise<void>;
  /** Lets `ms` pass on the store's clock: through `advanceTime`, or by really waiting. */
  advance(ms: number): Promise<void>;
  /** Stalls the backing store for `ms` (the `stall` option); only cases in `stallCases` call it. */
  stall(ms: number): Promise<void>;
  /** Waits `ms` of real time, whatever clock the store reads. */
  sleep(ms: number): Promise<void>;
}

/** One behaviour of the contract, as a plain function that throws when the store violates it. */
export interface StoreCase {
  readonly name: string;
  run(context: CaseContext): Promise<void>;
}

/**
 * Waits until at least `ms` have passed on the wall clock (`Date.now`, the clock stores read). A timer alone
 * is not enough: it runs on a monotonic clock and may fire a millisecond before `Date.now` says `ms` passed.
 */
async function sleep(ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (let left = ms; left > 0; left = until - Date.now()) {
    await new Promise((resolve) => setTimeout(resolve, left));
  }
}

/** Validated options with their defaults filled in. */
export interface ResolvedOptions {
  advanceTime: ((ms: number) => void | Promise<void>) | undefined;
  stall: ((ms: number) => void | Promise<void>) | undefined;
  timing: Timing;
  instances: number;
  concurrency: number;
}

export function resolveOptions(options: DescribeStoreOptions = {}): ResolvedOptions {
  if (options.advanceTime !== undefined && typeof options.advanceTime !== "function") {
    throw new IdempotencyOptionsError("advanceTime", "describeStore expects a function (ms) => void.");
  }
  if (options.stall !== undefined && typeof options.stall !== "function") {
    throw new IdempotencyOptionsError("stall", "describeStore expects a function (ms) => void.");
  }
  const realTimeLeaseMs = wholeNumberOption("realTimeLeaseMs", options.realTimeLeaseMs, {
    min: 1,
    unit: "milliseconds",
    fallback: DEFAULT_REAL_TIME_LEASE_MS,
  });
  return {
    advanceTime: options.advanceTime,
    stall: options.stall,
    timing: timingFor(options.advanceTime ? "controlled" : "real", realTimeLeaseMs),
    instances: wholeNumberOption("instances", options.instances, {
      min: 1,
      unit: "store instances",
      fallback: DEFAULT_INSTANCES,
    }),
    concurrency: wholeNumberOption("concurrency", options.concurrency, {
      min: 2,
      unit: "concurrent calls",
      fallback: DEFAULT_CONCURRENCY,
    }),
  };
}

/**
 * How long one case may take. The slowest case waits about one TTL in real time; the rest is headroom for a
 * slow backing store answering the race's thousand begins.
 */
export function caseTimeoutMs(resolved: ResolvedOptions): number {
  return 30_000 + (resolved.advanceTime ? 0 : 10 * resolved.timing.ttlMs);
}

/** Tracks the instances one case opened, so that each distinct one is closed exactly once. */
class CaseSession {
  readonly #factory: StoreFactory;
  readonly #resolved: ResolvedOptions;
  readonly #rawByChecked = new Map<IdempotencyStore, IdempotencyStore>();
  readonly #opened = new Set<IdempotencyStore>();
  readonly #closed = new Set<IdempotencyStore>();

  constructor(factory: StoreFactory, resolved: ResolvedOptions) {
    this.#factory = factory;
    this.#resolved = resolved;
  }

  get context(): CaseContext {
    const { timing, instances, concurrency, advanceTime, stall } = this.#resolved;
    return {
      timing,
      instances,
      concurrency,
      open: () => this.#open(),
      openMany: (count) => Promise.all(Array.from({ length: count }, () => this.#open())),
      closeNow: (store) => this.#closeNow(store),
      advance: async (ms) => {
        if (advanceTime) await advanceTime(ms);
        else await sleep(ms);
      },
      stall: async (ms) => {
        if (!stall) throw new Error("this case needs describeStore's `stall` option");
        await stall(ms);
      },
      sleep,
    };
  }

  async #open(): Promise<IdempotencyStore> {
    const raw = await this.#factory();
    this.#opened.add(raw);
    const checked = checkedStore(raw, `instance ${this.#rawByChecked.size + 1}`);
    this.#rawByChecked.set(checked, raw);
    return checked;
  }

  async #closeNow(store: IdempotencyStore): Promise<void> {
    const raw = this.#rawByChecked.get(store);
    if (!raw) throw new Error("closeNow() takes an instance opened by the same case.");
    this.#closed.add(raw);
    await raw.close?.();
  }

  /** Closes every distinct instance not closed yet; a factory returning one shared instance gets one close. */
  async closeAll(): Promise<void> {
    const open = [...this.#opened].filter((raw) => !this.#closed.has(raw));
    for (const raw of open) this.#closed.add(raw);
    const results = await Promise.allSettled(open.map((raw) => raw.close?.()));
    const failed = results.find((result) => result.status === "rejected");
    if (failed) throw new Error("close() of an instance failed", { cause: failed.reason });
  }
}

/** Runs one case against fresh instances from `factory`, closing them afterwards whatever the outcome. */
export async function runStoreCase(
  storeCase: StoreCase,
  factory: StoreFactory,
  options: DescribeStoreOptions = {},
): Promise<void> {
  const session = new CaseSession(factory, resolveOptions(options));
  try {
    await storeCase.run(session.context);
  } catch (error) {
    // The case's failure is the news; a close failing after it would only hide it.
    await session.closeAll().catch(() => undefined);
    throw error;
  }
  await session.closeAll();
}
