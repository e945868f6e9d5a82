import type { RouteHooks, RouteName } from "./types.js";

/**
 * The table's side of {@link RouteHooks}: execution counts, waiting for a run, and the `/slow` gate.
 *
 * @example
 * ```ts
 * const hooks = new TableHooks();
 * const pending = send("/slow");
 * await hooks.whenExecuted("slow");
 * hooks.openGate();
 * ```
 */
export class TableHooks implements RouteHooks {
  readonly #counts = new Map<RouteName, number>();
  readonly #waiters: Array<{ route: RouteName; n: number; resolve: () => void }> = [];
  #openGate!: () => void;
  readonly #gate = new Promise<void>((resolve) => {
    this.#openGate = resolve;
  });

  executed(route: RouteName): number {
    const n = (this.#counts.get(route) ?? 0) + 1;
    this.#counts.set(route, n);
    for (const waiter of [...this.#waiters]) {
      if (waiter.route === route && waiter.n <= n) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
    return n;
  }

  gate(): Promise<void> {
    return this.#gate;
  }

  /** Lets every `/slow` handler that awaits the gate (and every later one) go on. */
  openGate(): void {
    this.#openGate();
  }

  /** How many times `route` ran. */
  count(route: RouteName): number {
    return this.#counts.get(route) ?? 0;
  }

  /** Resolves once `route` has run at least `n` times. */
  whenExecuted(route: RouteName, n = 1): Promise<void> {
    if (this.count(route) >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ route, n, resolve }));
  }
}
