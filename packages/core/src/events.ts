import { type IdempotencyStoreError, toStoreError } from "./errors.js";

/**
 * Fields every event carries.
 *
 * @example
 * ```ts
 * onEvent: (event) => logger.info({ key: event.key, path: event.path, ms: event.elapsedMs }, event.type);
 * ```
 */
export interface IdempotencyEventBase {
  /** The hashed identity of the record (SHA-256 of scope, method, path and key): safe to log. */
  key: string;
  method: string;
  path: string;
  /** When the event happened, on the engine's `now` clock (epoch ms). */
  at: number;
  /** Time since the engine started handling this request. */
  elapsedMs: number;
}

/**
 * Everything the engine reports to `onEvent`, discriminated by `type`:
 * - `claimed`: this request owns the key and runs (`takeover`: it replaced an expired lease);
 * - `completed`: the response was stored for replay (`bodyStored: false`: above `maxResponseBytes`, so retries
 *   get 410);
 * - `replayed`: a stored response was sent instead of running the handler;
 * - `in-progress`: a duplicate arrived while the first was running (409), after waiting `waitedMs`;
 * - `key-reused`: the key arrived with a different fingerprint (422);
 * - `released`: the outcome was not stored (5xx, `shouldStore` said no, no response, or an error status
 *   answered to a request whose client left mid-body: `reason` says which), so a retry runs again;
 * - `not-started`: the handler declared it did nothing (`notStarted`), so the claim was released;
 * - `lease-lost`: this request lost its claim while running (another took over); its response was not stored;
 * - `execution-limit`: the handler ran past `maxExecutionMs`: its lease is no longer renewed (it ends at most
 *   `leaseMs` later, and a retry may then take the key over) and its signal was aborted;
 * - `store-error`: a store call failed or timed out (`complete` only after its retries ran out);
 * - `fail-open`: the store could not be reached and `failOpen` is on: the request runs without protection.
 *
 * @example
 * ```ts
 * createIdempotency({
 *   store,
 *   scope: "global",
 *   onEvent: (event) => {
 *     if (event.type === "store-error") logger.error(event.error, "idempotency store failed");
 *     metrics.increment(`idempotency.${event.type}`);
 *   },
 * });
 * ```
 */
export type IdempotencyEvent = IdempotencyEventBase &
  (
    | { type: "claimed"; takeover: boolean }
    | { type: "completed"; status: number; bodyBytes: number; bodyStored: boolean }
    | { type: "replayed"; status: number }
    | { type: "in-progress"; leaseRemainingMs: number; waitedMs: number }
    | { type: "key-reused" }
    | { type: "released"; status: number | null; reason: "not-stored" | "no-response" | "request-aborted" }
    | { type: "not-started"; status: number | null }
    | { type: "lease-lost"; operation: "extend" | "complete" }
    | { type: "execution-limit"; maxExecutionMs: number }
    | {
        type: "store-error";
        operation: "begin" | "complete" | "extend" | "release" | "transaction";
        error: IdempotencyStoreError;
      }
    | { type: "fail-open"; error: IdempotencyStoreError }
  );

/**
 * The `type` of an {@link IdempotencyEvent}.
 *
 * @example
 * ```ts
 * const counts: Partial<Record<IdempotencyEventType, number>> = {};
 * ```
 */
export type IdempotencyEventType = IdempotencyEvent["type"];

/** Reports an event to `onEvent`, given as a builder so that nothing is built when nobody listens. */
export type Emit = (event: () => IdempotencyEvent) => void;

/** A `store-error` event for a failed store call, its error wrapped as an `IdempotencyStoreError`. */
export function storeErrorEvent(
  base: IdempotencyEventBase,
  operation: "begin" | "complete" | "extend" | "release" | "transaction",
  error: unknown,
): IdempotencyEvent {
  return { ...base, type: "store-error", operation, error: toStoreError(operation, error) };
}
