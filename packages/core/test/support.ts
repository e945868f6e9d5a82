import { afterEach, beforeEach, vi } from "vitest";
import { createIdempotency, type IdempotencyEvent, type IdempotencyOptions } from "../src/index.js";
import { type InstrumentedStore, instrumentedStore } from "../src/testing.js";

export { type InstrumentedStore, instrumentedStore };

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
    store = instrumentedStore();
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
