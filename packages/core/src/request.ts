/**
 * The neutral request every binding translates its framework's request into. `scope` and `fingerprint`
 * functions receive it.
 *
 * @example
 * ```ts
 * import type { IdempotencyRequest } from "@idempotency/core";
 * import type { Request } from "express";
 *
 * type AuthenticatedRequest = Request & { user: { id: string; tenantId: string } };
 *
 * // The tenant your authentication middleware (mounted before the guard) put on req.user. Never a header the
 * // client chooses: a client-chosen X-Tenant-Id would let one tenant read another's replays.
 * const scope = (request: IdempotencyRequest) => (request.native as AuthenticatedRequest).user.tenantId;
 * ```
 */
export interface IdempotencyRequest {
  /** Upper-case method, e.g. `"POST"`. */
  method: string;
  /** The concrete request path without the query string, e.g. `"/orders/42"`. */
  path: string;
  /** The raw query string without `?`; `""` when there is none. */
  query: string;
  /** Case-insensitive header lookup, like WHATWG `Headers.get` (repeated fields joined with `", "`). */
  headers: { get(name: string): string | null };
  /**
   * The raw body bytes, read once and cached; the handler can still read the body afterwards. With
   * `maxBytes`, rejects with `IdempotencyRequestTooLargeError` as soon as more than `maxBytes` bytes arrive,
   * so an oversized body is never buffered whole (the engine passes its `maxRequestBytes`).
   */
  body(maxBytes?: number): Promise<Uint8Array>;
  /** The framework's own request or context (Express `req`, Hono `c`, Koa `ctx`), for scope functions. */
  native: unknown;
}
