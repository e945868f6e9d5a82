import { IdempotencyStoreError } from "./errors.js";

/**
 * A completed HTTP response as the core stores it: what {@link encodeResponse} takes and
 * {@link decodeResponse} returns, for tools that inspect or seed records. `headers` are lower-case name/value
 * pairs in the order the handler set them (a header set to several values appears several times).
 *
 * @example
 * ```ts
 * import { decodeResponse, type StoredResponse } from "@idempotency/core";
 *
 * const record = await store.get(key);
 * if (record?.state === "completed" && record.response) {
 *   const response: StoredResponse = decodeResponse(record.response);
 *   console.log(response.status, response.headers, response.body?.byteLength);
 * }
 * ```
 */
export interface StoredResponse {
  status: number;
  headers: Array<[name: string, value: string]>;
  /** The body bytes, or `null` when the response was completed without its body (too large to store). */
  body: Uint8Array | null;
}

// Layout, version 1 (all integers big-endian):
//   u8 version | u8 flags (bit 0: body omitted) | u16 status | u16 header count
//   per header: u16 name length | name (latin1) | u32 value length | value (latin1)
//   body: the remaining bytes
const VERSION = 1;
const FLAG_BODY_OMITTED = 1;

/**
 * Serialises a response into the versioned, opaque bytes a store keeps. Stores never need it; it is public
 * for tools that inspect or seed records.
 *
 * @example
 * ```ts
 * import { encodeResponse } from "@idempotency/core";
 *
 * const bytes = encodeResponse({ status: 201, headers: [["location", "/orders/1"]], body: new Uint8Array() });
 * ```
 */
export function encodeResponse(response: StoredResponse): Uint8Array {
  const headers = response.headers;
  // latin1: one byte per UTF-16 code unit, so string lengths are byte lengths.
  let size = 6;
  for (const [name, value] of headers) size += 6 + name.length + value.length;
  const body = response.body;
  // From Node's shared pool when small: the bytes are the caller's (a store that keeps them copies them, as
  // the `complete` contract says), and most are sent and dropped within the request.
  const out = Buffer.allocUnsafe(size + (body?.length ?? 0));
  out.writeUInt8(VERSION, 0);
  out.writeUInt8(body === null ? FLAG_BODY_OMITTED : 0, 1);
  out.writeUInt16BE(response.status, 2);
  out.writeUInt16BE(headers.length, 4);
  let offset = 6;
  for (const [name, value] of headers) {
    offset = out.writeUInt16BE(name.length, offset);
    offset += out.write(name, offset, "latin1");
    offset = out.writeUInt32BE(value.length, offset);
    offset += out.write(value, offset, "latin1");
  }
  if (body) out.set(body, offset);
  return out;
}

/**
 * Reads bytes written by {@link encodeResponse}; throws `IdempotencyStoreError` on anything else. The body is
 * a view into `bytes`.
 *
 * @example
 * ```ts
 * import { decodeResponse } from "@idempotency/core";
 *
 * const record = await store.get(key);
 * if (record?.state === "completed" && record.response) console.log(decodeResponse(record.response).status);
 * ```
 */
export function decodeResponse(bytes: Uint8Array): StoredResponse {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const corrupt = (why: string) => new IdempotencyStoreError(`Stored response is unreadable: ${why}.`);
  if (buf.length < 6) throw corrupt("shorter than its header");
  const version = buf.readUInt8(0);
  if (version !== VERSION) throw corrupt(`unknown encoding version ${version}`);
  const flags = buf.readUInt8(1);
  const status = buf.readUInt16BE(2);
  const count = buf.readUInt16BE(4);
  const headers: Array<[string, string]> = [];
  let offset = 6;
  for (let i = 0; i < count; i++) {
    if (offset + 2 > buf.length) throw corrupt("truncated header");
    const nameLength = buf.readUInt16BE(offset);
    offset += 2;
    const name = buf.toString("latin1", offset, offset + nameLength);
    offset += nameLength;
    if (offset + 4 > buf.length) throw corrupt("truncated header");
    const valueLength = buf.readUInt32BE(offset);
    offset += 4;
    if (offset + valueLength > buf.length) throw corrupt("truncated header value");
    headers.push([name, buf.toString("latin1", offset, offset + valueLength)]);
    offset += valueLength;
  }
  // A view, not a copy: stores hand out fresh bytes, and replays are large.
  const body =
    flags & FLAG_BODY_OMITTED
      ? null
      : new Uint8Array(bytes.buffer, bytes.byteOffset + offset, bytes.byteLength - offset);
  return { status, headers, body };
}
