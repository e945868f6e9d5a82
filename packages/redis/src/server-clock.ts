import { performance } from "node:perf_hooks";

/**
 * What this process knows about the Redis server's clock, learned from the server time every reply
 * carries. It turns "this call gives up in `timeoutMs`" into a deadline on the server clock, which the
 * script checks before it changes anything.
 *
 * The offset is `serverNow - localNowAtReceipt`; the server read its clock before the reply travelled
 * back, so the estimate is never later than the truth and a deadline computed from it errs early (by at most
 * the latency of the reply it was learned from), never late. The local side is the monotonic
 * `performance.now()`, so a step of the machine's wall clock cannot move a deadline.
 */
export class ServerClock {
  #offset: number | undefined;

  /** Whether a server time has been seen yet. */
  get known(): boolean {
    return this.#offset !== undefined;
  }

  /** Records a server time (epoch ms) read just before the reply that carried it arrived. */
  observe(serverNowMs: number): void {
    if (Number.isFinite(serverNowMs)) this.#offset = serverNowMs - performance.now();
  }

  /** The local monotonic time, in ms, to pass to {@link deadline} later. */
  localNow(): number {
    return performance.now();
  }

  /**
   * The server-clock epoch ms `ms` after the local moment `startedAt` (from {@link localNow}), or 0 (no
   * deadline) while the server clock is unknown.
   */
  deadline(startedAt: number, ms: number): number {
    if (this.#offset === undefined) return 0;
    return Math.floor(startedAt + this.#offset + ms);
  }
}
