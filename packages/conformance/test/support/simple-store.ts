import type { BeginArgs, BeginResult, IdempotencyStore, StoredRecord } from "@idempotency/core";

/** A record as the simple store keeps it. */
export interface Row {
  fingerprint: string;
  /** The owner token while in flight; `null` once completed. */
  token: string | null;
  response: Uint8Array | null;
  claimedAt: number;
  leaseUntil: number;
  expiresAt: number;
}

/**
 * A second correct store, independent of `MemoryStore`, written so that each broken store below differs
 * from it by one overridden hook. The suite must pass on it: that is the control of every proof.
 */
export class SimpleStore implements IdempotencyStore {
  protected readonly rows = new Map<string, Row>();
  protected readonly now: () => number;

  constructor(now: () => number) {
    this.now = now;
  }

  async begin(key: string, args: BeginArgs): Promise<BeginResult> {
    return this.claimOrReport(key, this.live(key), args);
  }

  async complete(key: string, token: string, response: Uint8Array | null, ttlMs: number): Promise<boolean> {
    const row = this.owned(key, token);
    if (!row) return false;
    row.token = null;
    row.response = response === null ? null : this.kept(response);
    row.expiresAt = this.completedExpiry(row, ttlMs);
    return true;
  }

  async extend(key: string, token: string, leaseMs: number): Promise<boolean> {
    const row = this.owned(key, token);
    if (!row) return false;
    row.leaseUntil = this.renewedLeaseUntil(row, leaseMs);
    row.expiresAt = Math.max(row.expiresAt, row.leaseUntil);
    return true;
  }

  async release(key: string, token: string): Promise<boolean> {
    if (!this.owned(key, token)) return false;
    this.rows.delete(key);
    return true;
  }

  async get(key: string): Promise<StoredRecord | null> {
    const row = this.live(key);
    if (!row) return null;
    const now = this.now();
    const ttlRemainingMs = row.expiresAt - now;
    if (row.token === null) {
      return {
        state: "completed",
        fingerprint: row.fingerprint,
        response: this.handedOut(row.response),
        ttlRemainingMs,
      };
    }
    const leaseRemainingMs = Math.max(0, row.leaseUntil - now);
    return {
      state: "in-flight",
      fingerprint: row.fingerprint,
      token: row.token,
      leaseRemainingMs,
      ttlRemainingMs,
    };
  }

  async delete(key: string): Promise<boolean> {
    const live = this.live(key) !== undefined;
    this.rows.delete(key);
    return live;
  }

  async close(): Promise<void> {}

  /** Decides from `found` and writes a claim; atomic only when `found` was read in the same synchronous step. */
  protected claimOrReport(key: string, found: Row | undefined, args: BeginArgs): BeginResult {
    const now = this.now();
    if (found && this.reportsAsIs(found, args)) {
      if (found.token === null) {
        return {
          state: "completed",
          fingerprint: found.fingerprint,
          response: this.handedOut(found.response),
        };
      }
      const leaseRemainingMs = Math.max(0, found.leaseUntil - now);
      return { state: "in-flight", fingerprint: found.fingerprint, leaseRemainingMs };
    }
    this.rows.set(key, {
      fingerprint: args.fingerprint,
      token: args.token,
      response: null,
      claimedAt: now,
      leaseUntil: now + args.leaseMs,
      expiresAt: now + Math.max(args.ttlMs, args.leaseMs),
    });
    return { state: "claimed", takeover: found !== undefined };
  }

  /** Whether begin must return the live record `row` rather than take it over. */
  protected reportsAsIs(row: Row, args: BeginArgs): boolean {
    return row.token === null || row.leaseUntil > this.now() || !args.allowTakeover;
  }

  protected owns(row: Row, token: string): boolean {
    return row.token !== null && row.token === token;
  }

  /** The bytes handed to a reader: a copy, so a reader that changes them cannot change the record. */
  protected handedOut(response: Uint8Array | null): Uint8Array | null {
    return response === null ? null : new Uint8Array(response);
  }

  /** The bytes kept for a response: a copy (not `slice()`, a view on a Node Buffer), so the caller may reuse its buffer. */
  protected kept(response: Uint8Array): Uint8Array {
    return new Uint8Array(response);
  }

  protected completedExpiry(_row: Row, ttlMs: number): number {
    return this.now() + ttlMs;
  }

  protected renewedLeaseUntil(_row: Row, leaseMs: number): number {
    return this.now() + leaseMs;
  }

  protected live(key: string): Row | undefined {
    const row = this.rows.get(key);
    if (row && row.expiresAt <= this.now()) {
      this.rows.delete(key);
      return undefined;
    }
    return row;
  }

  private owned(key: string, token: string): Row | undefined {
    const row = this.live(key);
    return row && this.owns(row, token) ? row : undefined;
  }
}
