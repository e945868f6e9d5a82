/**
 * The neutral request every binding translates its framework's request into. `scope` and `fingerprint`
 * functions receive it.
 *
 * @example
 * ```ts
 * import type { IdempotencyRequest } from "@idempotency/core";
 *
 * const scope = (request: IdempotencyRequest) => request.headers.get("x-tenant-id") ?? "anonymous";
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
