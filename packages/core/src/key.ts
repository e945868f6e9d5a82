/**
 * The outcome of {@link parseIdempotencyKey}: the key, or a reason saying what is wrong and the fix. Check
 * `ok` before reading `key`.
 *
 * @example
 * ```ts
 * import { type KeyParseResult, parseIdempotencyKey } from "@idempotency/core";
 *
 * const result: KeyParseResult = parseIdempotencyKey(request.headers.get("idempotency-key") ?? "", 255);
 * if (!result.ok) throw new Error(`Invalid Idempotency-Key header: ${result.reason}`);
 * console.log(result.key);
 * ```
 */
export type KeyParseResult = { ok: true; key: string } | { ok: false; reason: string };

const SPACE = 0x20;
const TAB = 0x09;
const QUOTE = 0x22;
const COMMA = 0x2c;
const SEMICOLON = 0x3b;
const BACKSLASH = 0x5c;
const TILDE = 0x7e;

const LIST_REASON =
  "it contains more than one value (a comma-separated list or repeated header); send exactly one key";

/**
 * Parses an `Idempotency-Key` header value as returned by `Headers.get()`: either one RFC 8941 sf-string
 * (`"abc"`) or a raw token of visible ASCII (`abc`), 1 to `maxLength` characters after unquoting. The
 * `reason` of a failure is meant to follow `Invalid Idempotency-Key header: `. One pass, no regex.
 *
 * @example
 * ```ts
 * import { parseIdempotencyKey } from "@idempotency/core";
 *
 * parseIdempotencyKey(' "a\\"b" ', 255); // { ok: true, key: 'a"b' }
 * parseIdempotencyKey("a, b", 255); // { ok: false, reason: "it contains more than one value ..." }
 * ```
 */
export function parseIdempotencyKey(value: string, maxLength: number): KeyParseResult {
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  if (start === end) return fail(emptyReason(maxLength));
  return value.charCodeAt(start) === QUOTE
    ? parseQuoted(value, start, end, maxLength)
    : parseRaw(value, start, end, maxLength);
}

function parseRaw(value: string, start: number, end: number, maxLength: number): KeyParseResult {
  for (let i = start; i < end; i++) {
    const c = value.charCodeAt(i);
    if (c === COMMA) return fail(LIST_REASON);
    if (c <= SPACE || c > TILDE || c === QUOTE) {
      return fail(
        `it contains the character ${describe(value, i)} at position ${i - start + 1}; ` +
          'use visible ASCII (0x21-0x7E) without " or ,',
      );
    }
  }
  return checkLength(value.slice(start, end), maxLength, "");
}

function parseQuoted(value: string, start: number, end: number, maxLength: number): KeyParseResult {
  // Unescaped runs are sliced whole, so only escapes cost a concatenation.
  let key = "";
  let runStart = start + 1;
  for (let i = start + 1; i < end; i++) {
    const c = value.charCodeAt(i);
    if (c === QUOTE) {
      key += value.slice(runStart, i);
      if (i + 1 < end) return fail(trailingReason(value, i + 1, start));
      return checkLength(key, maxLength, " after unquoting");
    }
    if (c === BACKSLASH) {
      if (i + 1 === end) break;
      const next = value.charCodeAt(i + 1);
      if (next < SPACE || next > TILDE) return fail(quotedCharReason(value, i + 1, start));
      if (next !== QUOTE && next !== BACKSLASH) {
        return fail(
          `its quoted string contains an invalid escape \\${value[i + 1]} at position ${i - start + 1}; ` +
            'only \\" and \\\\ may be escaped',
        );
      }
      key += value.slice(runStart, i);
      runStart = i + 1;
      i++;
    } else if (c < SPACE || c > TILDE) {
      return fail(quotedCharReason(value, i, start));
    }
  }
  return fail("its quoted string is not terminated");
}

function trailingReason(value: string, from: number, start: number): string {
  let i = from;
  while (isOws(value.charCodeAt(i))) i++;
  const c = value.charCodeAt(i);
  const position = i - start + 1;
  if (c === COMMA) return LIST_REASON;
  if (c === SEMICOLON) {
    return `its quoted string is followed by parameters at position ${position}; send the key alone`;
  }
  return (
    `it has the character ${describe(value, i)} after the closing quote at position ${position}; ` +
    "send only the quoted key"
  );
}

function quotedCharReason(value: string, i: number, start: number): string {
  return (
    `its quoted string contains the character ${describe(value, i)} at position ${i - start + 1}; ` +
    "use printable ASCII (0x20-0x7E)"
  );
}

function checkLength(key: string, maxLength: number, qualifier: string): KeyParseResult {
  if (key.length === 0) return fail(emptyReason(maxLength));
  if (key.length > maxLength) {
    return fail(`it is ${key.length} characters long${qualifier}; the limit is ${maxLength}`);
  }
  return { ok: true, key };
}

function emptyReason(maxLength: number): string {
  return `it is empty; send 1 to ${maxLength} characters`;
}

/**
 * Shows a visible ASCII character as itself, a control character as a code, and anything else as itself and
 * its code point, so reasons stay safe to log and name what the client typed. Header values reach the engine
 * as one character per byte (latin1), so a UTF-8 sequence there (`café` arrives as `cafÃ©`) is decoded first.
 */
function describe(value: string, i: number): string {
  const c = value.codePointAt(i) ?? 0;
  if (c > SPACE && c <= TILDE) return value[i] ?? "";
  if (c < 0xa0 || (c >= 0xd800 && c <= 0xdfff)) {
    return c < 0x80 ? `0x${c.toString(16).padStart(2, "0")}` : `U+${hex(c)}`; // never echo controls or lone halves
  }
  const character = utf8At(value, i) ?? String.fromCodePoint(c);
  return `"${character}" (U+${hex(character.codePointAt(0) ?? c)})`;
}

function hex(c: number): string {
  return c.toString(16).toUpperCase().padStart(4, "0");
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The character a UTF-8 sequence starting at `i` of a byte-per-character string encodes, if it is one. */
function utf8At(value: string, i: number): string | undefined {
  const lead = value.charCodeAt(i);
  const length =
    lead >= 0xc2 && lead <= 0xdf
      ? 2
      : lead >= 0xe0 && lead <= 0xef
        ? 3
        : lead >= 0xf0 && lead <= 0xf4
          ? 4
          : 0;
  if (length === 0 || i + length > value.length) return undefined;
  const bytes = new Uint8Array(length);
  for (let k = 0; k < length; k++) {
    const byte = value.charCodeAt(i + k);
    if (byte > 0xff) return undefined;
    bytes[k] = byte;
  }
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function isOws(c: number): boolean {
  return c === SPACE || c === TAB;
}

function fail(reason: string): KeyParseResult {
  return { ok: false, reason };
}
