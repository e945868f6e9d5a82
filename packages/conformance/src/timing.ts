/** The durations a case works with, in milliseconds. */
export interface Timing {
  /** A lease the case lets expire. */
  leaseMs: number;
  /** A TTL the case lets expire (three leases). */
  ttlMs: number;
  /** How far past a deadline the case moves before it relies on the deadline having passed. */
  marginMs: number;
  /** A lease that never expires within a case. */
  longLeaseMs: number;
  /** A TTL that never expires within a case. */
  longTtlMs: number;
}

/** Real-time lease unless `realTimeLeaseMs` says otherwise: short enough that the whole suite takes seconds. */
export const DEFAULT_REAL_TIME_LEASE_MS = 200;

/**
 * With a controlled clock every deadline can be hit to the millisecond. On a real clock the margin has to
 * absorb timer overshoot and scheduling delays of a loaded CI machine, hence at least 150 ms.
 */
export function timingFor(mode: "controlled" | "real", realTimeLeaseMs = DEFAULT_REAL_TIME_LEASE_MS): Timing {
  const leaseMs = mode === "controlled" ? 10_000 : realTimeLeaseMs;
  return {
    leaseMs,
    ttlMs: 3 * leaseMs,
    marginMs: mode === "controlled" ? 1 : Math.max(150, Math.round(0.75 * leaseMs)),
    longLeaseMs: 100 * leaseMs,
    longTtlMs: 200 * leaseMs,
  };
}
