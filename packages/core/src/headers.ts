/**
 * Response headers as a binding may hand them over: Node's `OutgoingHttpHeaders`-like record, or name/value
 * pairs (e.g. from WHATWG `Headers`, with `set-cookie` as separate pairs).
 *
 * @example
 * ```ts
 * execution.start(201, res.getHeaders()); // Node / Express
 * execution.start(response.status, response.headers); // WHATWG Response (Hono)
 * ```
 */
export type ResponseHeadersInput =
  | Iterable<readonly [string, string]>
  | Record<string, string | number | readonly string[] | undefined>;

// RFC 9110 §7.6.1 hop-by-hop fields, plus the framing headers the replay recomputes from the stored body.
export const NEVER_STORED_HEADERS: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
]);

/**
 * Headers that carry credentials or session state: never stored, so never replayed to whoever holds the key.
 * `Authentication-Info` and `Proxy-Authentication-Info` (RFC 9110 §11.6.3, §11.7.3) carry per-exchange
 * authentication data such as a Digest `nextnonce` or `rspauth`.
 *
 * @example
 * ```ts
 * import { DEFAULT_UNREPLAYED_HEADERS } from "@idempotency/core";
 *
 * DEFAULT_UNREPLAYED_HEADERS;
 * // ["set-cookie", "www-authenticate", "authorization", "proxy-authenticate",
 * //  "authentication-info", "proxy-authentication-info"]
 * ```
 */
export const DEFAULT_UNREPLAYED_HEADERS: readonly string[] = [
  "set-cookie",
  "www-authenticate",
  "authorization",
  "proxy-authenticate",
  "authentication-info",
  "proxy-authentication-info",
];

/** Flattens any accepted header shape into lower-case name/value pairs. */
export function normalizeHeaders(input: ResponseHeadersInput): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const entries: Iterable<readonly [string, unknown]> =
    Symbol.iterator in input ? (input as Iterable<readonly [string, string]>) : Object.entries(input);
  for (const [name, value] of entries) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (Array.isArray(value)) for (const item of value) out.push([lower, String(item)]);
    else out.push([lower, String(value)]);
  }
  return out;
}

/** The headers worth storing for a replay: without hop-by-hop, framing and credential headers. */
export function storableHeaders(
  headers: ReadonlyArray<[string, string]>,
  unreplayed: ReadonlySet<string>,
): Array<[string, string]> {
  const connectionListed = new Set<string>();
  for (const [name, value] of headers) {
    if (name === "connection") {
      for (const token of value.split(",")) connectionListed.add(token.trim().toLowerCase());
    }
  }
  return headers.filter(
    ([name]) => !NEVER_STORED_HEADERS.has(name) && !unreplayed.has(name) && !connectionListed.has(name),
  );
}

/** The declared `Content-Length`, when there is exactly one valid value. */
export function contentLength(headers: ReadonlyArray<[string, string]>): number | undefined {
  let found: number | undefined;
  for (const [name, value] of headers) {
    if (name !== "content-length") continue;
    if (found !== undefined || !/^\d+$/.test(value.trim())) return undefined;
    found = Number(value.trim());
  }
  return found;
}
