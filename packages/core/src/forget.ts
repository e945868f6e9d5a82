import { IdempotencyInvalidKeyError, IdempotencyOptionsError } from "./errors.js";
import { identityKey } from "./identity.js";
import { parseIdempotencyKey } from "./key.js";
import { checkOptionNames, type ResolvedOptions } from "./options.js";
import { RUN_METHOD, RUN_PATH } from "./run.js";

/**
 * Which record `forget` deletes: the principal, and for an HTTP record its method and concrete path.
 *
 * @example
 * ```ts
 * const target: ForgetTarget = { scope: "tenant-42", method: "POST", path: "/orders" };
 * await idempotency.forget("order-7", target);
 * ```
 */
export interface ForgetTarget {
  /** The principal, as the engine's `scope` function names it. Default `"global"` for a `"global"` engine. */
  scope?: string;
  /** The HTTP method of the record (any case); give it with `path`, or neither for a `run()` record. */
  method?: string;
  /** The concrete request path, without the query string, e.g. `"/orders"`. */
  path?: string;
}

const FORGET_OPTIONS = ["scope", "method", "path"];

/** The hashed identity `forget` deletes, or a typed error naming what is wrong with its arguments. */
export function forgottenIdentity(key: unknown, target: ForgetTarget, resolved: ResolvedOptions): string {
  checkOptionNames(target, FORGET_OPTIONS, "forget() target: an object { scope?, method?, path? }");
  const { scope, method, path } = target;
  if (scope !== undefined && (typeof scope !== "string" || scope.length === 0)) {
    throw new IdempotencyOptionsError("scope", "expected a non-empty string naming the principal.");
  }
  if (scope === undefined && resolved.scope !== "global") {
    throw new IdempotencyOptionsError(
      "scope",
      "forget() needs { scope } naming the principal, because the engine's scope is a function of a request.",
    );
  }
  if ((method === undefined) !== (path === undefined)) {
    throw new IdempotencyOptionsError(
      method === undefined ? "method" : "path",
      "give both method and path for an HTTP record, or neither for a run() record.",
    );
  }
  if (typeof key !== "string") {
    throw new IdempotencyInvalidKeyError(`forget() needs the key as a string; got ${typeof key}.`);
  }
  if (method === undefined || path === undefined) {
    if (key.length === 0 || key.length > resolved.maxKeyLength) {
      throw new IdempotencyInvalidKeyError(
        `forget() needs a run() key of 1 to ${resolved.maxKeyLength} characters; got ${key.length}.`,
      );
    }
    return identityKey(scope ?? "global", RUN_METHOD, RUN_PATH, key);
  }
  if (typeof method !== "string" || method.length === 0) {
    throw new IdempotencyOptionsError("method", 'expected an HTTP method such as "POST".');
  }
  if (typeof path !== "string" || !path.startsWith("/") || path.includes("?")) {
    throw new IdempotencyOptionsError(
      "path",
      `expected the concrete request path without the query string, such as "/orders/42"; got ${JSON.stringify(path)}.`,
    );
  }
  const parsed = parseIdempotencyKey(key, resolved.maxKeyLength);
  if (!parsed.ok) throw new IdempotencyInvalidKeyError(`forget() got an invalid key: ${parsed.reason}.`);
  return identityKey(scope ?? "global", method.toUpperCase(), path, parsed.key);
}
