import {
  type BeginArgs,
  type BeginResult,
  IdempotencyStoreError,
  type StoreCallOptions,
} from "@idempotency/core";
import { type Row, SimpleStore } from "./simple-store.js";

/** The bug the suite exists for: begin reads, awaits, then writes from what it read. */
export class CheckThenActStore extends SimpleStore {
  override async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    const found = this.live(key);
    await new Promise((resolve) => setImmediate(resolve));
    return this.claimOrReport(key, found, args);
  }
}

/** complete, extend and release act for any token while the record is in flight. */
export class UnfencedStore extends SimpleStore {
  protected override owns(row: Row): boolean {
    return row.token !== null;
  }
}

/** Keeps responses as UTF-8 text, as a store with a string column or a JSON document would. */
export class TextStore extends SimpleStore {
  protected override kept(response: Uint8Array): Uint8Array {
    return new TextEncoder().encode(new TextDecoder().decode(response));
  }
}

/** Hands every reader the stored bytes themselves, so one reader's changes reach the next. */
export class SharedBytesStore extends SimpleStore {
  protected override handedOut(response: Uint8Array | null): Uint8Array | null {
    return response;
  }
}

/** Takes an expired lease over even when the caller did not allow it. */
export class EagerTakeoverStore extends SimpleStore {
  protected override reportsAsIs(row: Row): boolean {
    return row.token === null || row.leaseUntil > this.now();
  }
}

/** Takes a completed record over once its lease time has passed, as if it were still in flight. */
export class CompletedTakeoverStore extends SimpleStore {
  protected override reportsAsIs(row: Row, args: BeginArgs): boolean {
    return row.leaseUntil > this.now() || !args.allowTakeover;
  }
}

/** extend answers true but renews nothing. */
export class StaleExtendStore extends SimpleStore {
  protected override renewedLeaseUntil(row: Row): number {
    return row.leaseUntil;
  }
}

/** complete ignores its TTL and keeps the claim's. */
export class ClaimTtlStore extends SimpleStore {
  protected override completedExpiry(row: Row): number {
    return row.expiresAt;
  }
}

/** complete counts its TTL from the claim instead of from completion. */
export class ClaimTimeTtlStore extends SimpleStore {
  protected override completedExpiry(row: Row, ttlMs: number): number {
    return row.claimedAt + ttlMs;
  }
}

/** Once closed, every method throws a plain Error instead of IdempotencyStoreError. */
export class RawErrorStore extends SimpleStore {
  #closed = false;

  override async close(): Promise<void> {
    this.#closed = true;
  }

  protected override live(key: string): Row | undefined {
    if (this.#closed) throw new Error("store is closed");
    return super.live(key);
  }
}

/**
 * A store behind a server that can stall (the `stall` option): a begin waits until the stall ends, then
 * refuses to apply when the caller's deadline has passed, as RedisStore's scripts do. The control of the
 * deadline case; it reads the real clock, since a stall is real time.
 */
export class StallingStore extends SimpleStore {
  #stalledUntil = 0;

  constructor() {
    super(() => Date.now());
  }

  stall(ms: number): void {
    this.#stalledUntil = Date.now() + ms;
  }

  /** Whether a command that reaches the server late is refused. */
  protected enforcesDeadline(): boolean {
    return true;
  }

  /** Gives up at the caller's deadline, like a client with a timeout; the command still reaches the server. */
  override begin(key: string, args: BeginArgs, call?: StoreCallOptions): Promise<BeginResult> {
    const calledAt = Date.now();
    const applied = this.#apply(key, args, calledAt, call);
    if (!call) return applied;
    applied.catch(() => undefined);
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new IdempotencyStoreError("begin timed out")), call.timeoutMs),
    );
    return Promise.race([applied, timeout]);
  }

  async #apply(
    key: string,
    args: BeginArgs,
    calledAt: number,
    call?: StoreCallOptions,
  ): Promise<BeginResult> {
    const wait = this.#stalledUntil - calledAt;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (this.enforcesDeadline() && call && Date.now() - calledAt > call.timeoutMs) {
      throw new IdempotencyStoreError("begin reached the store after its deadline and was not applied");
    }
    return super.begin(key, args);
  }
}

/** Applies a begin whenever it reaches the store, however late, after its caller gave up on it. */
export class LateApplyingStore extends StallingStore {
  protected override enforcesDeadline(): boolean {
    return false;
  }
}
