import { xxh3 } from "@node-rs/xxhash";
import { canonicalJsonUtf8 } from "./canonical-json.js";
import { IdempotencyRequestTooLargeError } from "./errors.js";
import type { IdempotencyRequest } from "./request.js";

/**
 * What makes a request "the same request" for a key. `false`: no fingerprint (a reused key is never
 * refused); `{ headers }`: the default (method, path, query, body) plus these request headers; a function:
 * your own fingerprint string.
 *
 * @example
 * ```ts
 * createIdempotency({ store, scope: "global", fingerprint: { headers: ["x-currency"] } });
 * createIdempotency({ store, scope: "global", fingerprint: (request) => request.headers.get("x-order-id") ?? "" });
 * ```
 */
export type FingerprintOption =
  | false
  | { headers: readonly string[] }
  | ((request: IdempotencyRequest) => string | Promise<string>);

/**
 * The algorithm tag stored in front of every fingerprint, so the algorithm can change later.
 *
 * @example
 * ```ts
 * import { FINGERPRINT_ALGORITHM } from "@idempotency/core";
 *
 * record.fingerprint.startsWith(`${FINGERPRINT_ALGORITHM}:`); // true for fingerprints of this version
 * ```
 */
export const FINGERPRINT_ALGORITHM = "xxh3-128";

/** `"xxh3-128:<32 hex digits>"` of the length-prefixed parts (`<byte length>:<bytes>` each), in one buffer. */
export function hashParts(parts: ReadonlyArray<string | Uint8Array>): string {
  const prefixes: string[] = [];
  let size = 0;
  for (const part of parts) {
    const length = typeof part === "string" ? Buffer.byteLength(part) : part.length;
    const prefix = `${length}:`;
    prefixes.push(prefix);
    size += prefix.length + length;
  }
  const input = Buffer.allocUnsafe(size);
  let offset = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string | Uint8Array;
    offset += input.write(prefixes[i] as string, offset, "latin1");
    if (typeof part === "string") offset += input.write(part, offset, "utf8");
    else {
      input.set(part, offset);
      offset += part.length;
    }
  }
  const digest = xxh3.xxh128(input);
  return `${FINGERPRINT_ALGORITHM}:${digest.toString(16).padStart(32, "0")}`;
}

/** JSON media types: `application/json` and any `+json` suffix, with or without parameters. */
function isJson(contentType: string | null): boolean {
  if (contentType === null) return false;
  const semicolon = contentType.indexOf(";");
  const media = (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
  return media === "application/json" || media.endsWith("+json");
}

/**
 * The body's contribution: JSON bodies canonicalised (key order and whitespace ignored, every value kept
 * exactly), anything else — including JSON that does not parse — as raw bytes. The mode is part of the hash.
 */
function bodyParts(body: Uint8Array, contentType: string | null): [string, Uint8Array] {
  if (body.length > 0 && isJson(contentType)) {
    // Not UTF-8 or not one JSON text: fingerprint the bytes.
    const canonical = canonicalJsonUtf8(body);
    if (canonical !== undefined) return ["json", canonical];
  }
  return ["raw", body];
}

/** Builds the fingerprint function for an option value (already validated). */
export function createFingerprinter(
  option: FingerprintOption | undefined,
  maxRequestBytes: number,
): (request: IdempotencyRequest) => Promise<string> {
  if (option === false) return async () => "none";
  if (typeof option === "function") {
    return async (request) => {
      const value = await option(request);
      if (typeof value !== "string") {
        throw new TypeError(`The fingerprint function must return a string; it returned ${typeof value}.`);
      }
      return hashParts(["custom", value]);
    };
  }
  const headerNames = [...new Set((option?.headers ?? []).map((name) => name.toLowerCase()))].sort();
  return async (request) => {
    const parts: Array<string | Uint8Array> = ["http", request.method, request.path, request.query];
    for (const name of headerNames) parts.push(name, request.headers.get(name) ?? "\u0000absent");
    parts.push(
      ...bodyParts(await boundedBody(request, maxRequestBytes), request.headers.get("content-type")),
    );
    return hashParts(parts);
  };
}

/**
 * `request` as the user's `scope` and `fingerprint` functions see it: `body()` without an argument is bounded
 * by `maxRequestBytes` like the engine's own read (413 past it), so a custom fingerprint that hashes the body
 * cannot buffer an unbounded one. A caller that passes a larger limit gets it, on purpose.
 */
export function withBoundedBody(request: IdempotencyRequest, maxBytes: number): IdempotencyRequest {
  return {
    method: request.method,
    path: request.path,
    query: request.query,
    headers: request.headers,
    body: (limit = maxBytes) => boundedBody(request, limit),
    native: request.native,
  };
}

/**
 * The body, never longer than `maxBytes`: a declared `Content-Length` above it is refused before reading, and
 * the binding's reader stops once more arrives (checked again here, for readers that ignore the limit).
 */
async function boundedBody(request: IdempotencyRequest, maxBytes: number): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared.trim()) > maxBytes) {
    throw new IdempotencyRequestTooLargeError(maxBytes);
  }
  const body = await request.body(maxBytes);
  if (body.length > maxBytes) throw new IdempotencyRequestTooLargeError(maxBytes);
  return body;
}
