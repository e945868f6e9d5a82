import { afterEach, beforeEach, vi } from "vitest";
import {
  type BeginArgs,
  createIdempotency,
  type IdempotencyEvent,
  type IdempotencyOptions,
  type IdempotencyStore,
  MemoryStore,
  type StoreCallOptions,
  type StoredRecord,
} from "../src/index.js";
import { type SilenceableStore, SilencedOwners } from "./harness.js";

type Method = "begin" | "complete" | "extend" | "release" | "get" | "delete";

/** A MemoryStore that counts calls per method and can be switched to failing, like a store that is down. */
export class InstrumentedStore implements IdempotencyStore, SilenceableStore {
  readonly inner: MemoryStore;
  readonly calls: Record<Method, number> = {
    begin: 0,
    complete: 0,
    extend: 0,
    release: 0,
    get: 0,
    delete: 0,
  };
  down = false;
  /** Calls to these methods never answer, like a store behind a stalled connection. */
  readonly hanging = new Set<Method>();
  /** The next N calls to a method fail (then it works again), like a brief network blip. */
  readonly failures: Partial<Record<Method, number>> = {};
  /** The caller's deadline (the last argument) of every call, in call order. */
  readonly deadlines: Array<[Method, StoreCallOptions | undefined]> = [];
  readonly #silenced = new SilencedOwners();

  /** Pass `inner` to give two instruments (two "processes") the same records. */
  constructor(inner: MemoryStore = new MemoryStore()) {
    this.inner = inner;
  }

  get totalCalls(): number {
    return Object.values(this.calls).reduce((a, b) => a + b, 0);
  }

  #enter(method: Method, call: StoreCallOptions | undefined): void {
    this.calls[method]++;
    this.deadlines.push([method, call]);
    if (this.down) throw new Error("connect ECONNREFUSED 127.0.0.1:6379");
    const failures = this.failures[method] ?? 0;
    if (failures > 0) {
      this.failures[method] = failures - 1;
      throw new Error("read ECONNRESET");
    }
  }

  /** Never settles when `method` is hanging: the engine's storeTimeoutMs has to end the wait. */
  async #answer<T>(method: Method, call: () => Promise<T>): Promise<T> {
    if (this.hanging.has(method)) return new Promise<T>(() => {});
    return call();
  }

  silenceOwnerOf(key: string): void {
    this.#silenced.silence(key);
  }

  async begin(key: string, args: BeginArgs, call?: StoreCallOptions) {
    this.#enter("begin", call);
    const result = await this.#answer("begin", () => this.inner.begin(key, args));
    if (result.state === "claimed") this.#silenced.claimed(key, args.token);
    return result;
  }
  async complete(
    key: string,
    token: string,
    response: Uint8Array | null,
    ttlMs: number,
    call?: StoreCallOptions,
  ) {
    this.#enter("complete", call);
    return this.#answer("complete", () => this.inner.complete(key, token, response, ttlMs));
  }
  async extend(key: string, token: string, leaseMs: number, call?: StoreCallOptions) {
    // A frozen or dead process's renewal never arrives; the process itself would not notice either.
    if (this.#silenced.has(token)) return true;
    this.#enter("extend", call);
    return this.#answer("extend", () => this.inner.extend(key, token, leaseMs));
  }
  async release(key: string, token: string, call?: StoreCallOptions) {
    this.#enter("release", call);
    return this.#answer("release", () => this.inner.release(key, token));
  }
  async get(key: string, call?: StoreCallOptions): Promise<StoredRecord | null> {
    this.#enter("get", call);
    return this.#answer("get", () => this.inner.get(key));
  }
  async delete(key: string, call?: StoreCallOptions) {
    this.#enter("delete", call);
    return this.#answer("delete", () => this.inner.delete(key));
  }
}

/** A promise with its resolve function exposed, to hold a handler open until the test lets it go. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** The fake clock's starting instant in the engine tests. */
export const T0 = Date.UTC(2026, 0, 1);

/** Fresh for every test of a file that called `useEngineFixture` (live bindings): the store and its events. */
export let store: InstrumentedStore;
export let events: IdempotencyEvent[];

/** The types of the events emitted so far, in order. */
export const eventTypes = () => events.map((event) => event.type);

/**
 * Sets up the engine tests of one file: fake timers at `T0`, a fresh `InstrumentedStore` and event log per
 * test. Returns `engine(options)`, which creates an engine on that store (scope "global", events logged)
 * with `defaults` and then `options` applied.
 */
export function useEngineFixture(defaults: Partial<IdempotencyOptions> = {}) {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
    store = new InstrumentedStore();
    events = [];
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  return (options: Partial<IdempotencyOptions> = {}) =>
    createIdempotency({
      store,
      scope: "global",
      onEvent: (event) => events.push(event),
      ...defaults,
      ...options,
    });
}
