// The commands the store sends, built as plain documents so the unit tests can compare them whole. Every
// user-derived value (key, token, fingerprint, durations, response) enters an aggregation expression only
// inside `$literal`: a string starting with "$" would otherwise be read as a field path or a variable.
import type { Binary } from "mongodb";

/** The server's clock, one value for the whole operation (MongoDB 4.2+). */
const NOW = "$$NOW";

/** The record's TTL has not run out. A missing or non-Date `expiresAt` counts as expired. */
export const LIVE = {
  $and: [{ $eq: [{ $type: "$expiresAt" }, "date"] }, { $gt: ["$expiresAt", NOW] }],
};

/** The record's lease has not run out. */
const LEASE_LIVE = {
  $and: [{ $eq: [{ $type: "$leaseUntil" }, "date"] }, { $gt: ["$leaseUntil", NOW] }],
};

const IN_FLIGHT = { $eq: ["$state", { $literal: "in-flight" }] };

/** Milliseconds from the server's now to `field`, as a double (never a Long), at least 0. */
function remainingMs(field: string): object {
  return { $max: [0, { $toDouble: { $subtract: [field, NOW] } }] };
}

export interface BeginCommand {
  filter: { _id: string };
  update: object[];
  projection: object;
}

/**
 * `begin`: one `findOneAndUpdate` with `upsert`. The pipeline replaces the document with a fresh claim
 * only when there is none (the upsert's `{ _id }` has no `state`, so it is not live), it has expired, or
 * (with `allowTakeover`) it is in flight with an expired lease; otherwise it puts back `$$ROOT` unchanged,
 * which MongoDB applies as a no-op write. `takeover` is computed from the record being replaced.
 */
export function beginCommand(
  key: string,
  token: string,
  fingerprint: string,
  leaseMs: number,
  ttlMs: number,
  allowTakeover: boolean,
): BeginCommand {
  const claim = {
    $or: [{ $not: [LIVE] }, { $and: [{ $literal: allowTakeover }, IN_FLIGHT, { $not: [LEASE_LIVE] }] }],
  };
  const claimed = {
    _id: { $literal: key },
    state: { $literal: "in-flight" },
    fingerprint: { $literal: fingerprint },
    owner: { $literal: token },
    leaseUntil: { $add: [NOW, { $literal: leaseMs }] },
    // Never shorter than the lease: a record must not expire under a live claim.
    expiresAt: { $add: [NOW, { $literal: Math.max(ttlMs, leaseMs) }] },
    takeover: { $and: [LIVE, IN_FLIGHT] },
  };
  return {
    filter: { _id: key },
    update: [{ $replaceWith: { $cond: [claim, claimed, "$$ROOT"] } }],
    // Aggregation expressions in a findAndModify projection: MongoDB 4.4+.
    projection: {
      _id: 0,
      state: 1,
      fingerprint: 1,
      owner: 1,
      response: 1,
      takeover: 1,
      leaseRemainingMs: remainingMs("$leaseUntil"),
    },
  };
}

/** The filter of the fenced writes: `token` owns the live in-flight record under `key`. */
export function ownedFilter(key: string, token: string): object {
  return { _id: { $eq: key }, owner: { $eq: token }, state: "in-flight", $expr: LIVE };
}

/** `complete`: mark the owned record completed with `response`, living `ttlMs` from the server's now. */
export function completeUpdate(response: Binary | null, ttlMs: number): object[] {
  return [
    {
      $set: {
        state: { $literal: "completed" },
        response: { $literal: response },
        expiresAt: { $add: [NOW, { $literal: ttlMs }] },
      },
    },
    { $unset: ["owner", "leaseUntil", "takeover"] },
  ];
}

/** `extend`: the lease ends `leaseMs` from the server's now; the TTL is pushed out to it, never cut short. */
export function extendUpdate(leaseMs: number): object[] {
  const leaseUntil = { $add: [NOW, { $literal: leaseMs }] };
  return [{ $set: { leaseUntil, expiresAt: { $max: ["$expiresAt", leaseUntil] } } }];
}

/** `get`: the live record under `key`, with its remaining times measured on the server's clock. */
export function getPipeline(key: string): object[] {
  return [
    { $match: { _id: { $eq: key }, $expr: LIVE } },
    { $limit: 1 },
    {
      $project: {
        _id: 0,
        state: 1,
        fingerprint: 1,
        owner: 1,
        response: 1,
        leaseRemainingMs: remainingMs("$leaseUntil"),
        ttlRemainingMs: remainingMs("$expiresAt"),
      },
    },
  ];
}

/** `delete`: removes the record whatever its state; the projection tells whether it was live. */
export function deleteCommand(key: string): { filter: object; projection: object } {
  return { filter: { _id: { $eq: key } }, projection: { _id: 0, live: LIVE } };
}

/** The TTL index of `ensureIndexes()`: MongoDB deletes a record once `expiresAt` has passed (about once a minute). */
export const TTL_INDEX = {
  spec: { expiresAt: 1 },
  options: { name: "idempotency_expires_at_ttl", expireAfterSeconds: 0 },
} as const;
