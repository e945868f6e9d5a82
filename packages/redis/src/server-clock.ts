import { performance } from "node:perf_hooks";

/** How long an offset sample counts: between one and two of these. */
const WINDOW_MS = 30_000;

/**
 * What this process knows about the Redis server's clock, learned from the server time every reply
 * carries. It turns "this call gives up in `timeoutMs`" into a deadline on the server clock, which the
 * script checks before it changes anything.
 *
 * Each reply gives a sample `serverNow - localNowAtReceipt`. The server read its clock before the reply
 * travelled back (and before this process got round to reading it), so every sample is at most the true
 * offset and errs early by the reply's latency. The best estimate is therefore the largest recent sample: a
 * reply that sat behind a stalled event loop cannot drag deadlines early, and samples expire after one to
 * two windows of 30 s, so a server clock that is stepped back is followed within a minute. The local side is
 * the monotonic `performance.now()`, so a step of this machine's wall clock cannot move a deadline.
 */
export class ServerClock {
  readonly #localNow: () => number;
  #windowStart = Number.NEGATIVE_INFINITY;
  #current = Number.NEGATIVE_INFINITY;
  #previous = Number.NEGATIVE_INFINITY;

  /** `localNow`: a monotonic clock in ms; injectable for tests. */
  constructor(localNow: () => number = () => performance.now()) {
    this.#localNow = localNow;
  }

  /** Whether a server time has been seen yet. */
  get known(): boolean {
    return this.#offset() !== Number.NEGATIVE_INFINITY;
  }

  /** Records a server time (epoch ms) read just before the reply that carried it arrived. */
  observe(serverNowMs: number): void {
    if (!Number.isFinite(serverNowMs)) return;
    const local = this.#localNow();
    const elapsed = local - this.#windowStart;
    if (elapsed >= WINDOW_MS) {
      this.#previous = elapsed >= 2 * WINDOW_MS ? Number.NEGATIVE_INFINITY : this.#current;
      this.#current = Number.NEGATIVE_INFINITY;
      this.#windowStart = local;
    }
    this.#current = Math.max(this.#current, serverNowMs - local);
  }

  /** The local monotonic time, in ms, to pass to {@link deadline} later. */
  localNow(): number {
    return this.#localNow();
  }

  /**
   * The server-clock epoch ms `ms` after the local moment `startedAt` (from {@link localNow}), or 0 (no
   * deadline) while the server clock is unknown.
   */
  deadline(startedAt: number, ms: number): number {
    if (!this.known) return 0;
    return Math.floor(startedAt + this.#offset() + ms);
  }

  #offset(): number {
    return Math.max(this.#current, this.#previous);
  }
}
