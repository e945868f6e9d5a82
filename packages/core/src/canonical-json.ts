import { isUtf8 } from "node:buffer";

/**
 * Containers nested deeper than this make {@link canonicalJson} give up (return `undefined`) instead of
 * overflowing the stack; the caller then fingerprints such a body as raw bytes.
 */
export const MAX_JSON_DEPTH = 512;

const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const QUOTE = 0x22;
const PLUS = 0x2b;
const COMMA = 0x2c;
const MINUS = 0x2d;
const DOT = 0x2e;
const SLASH = 0x2f;
const ZERO = 0x30;
const NINE = 0x39;
const COLON = 0x3a;
const UPPER_E = 0x45;
const OPEN_BRACKET = 0x5b;
const BACKSLASH = 0x5c;
const CLOSE_BRACKET = 0x5d;
const LOWER_E = 0x65;
const LOWER_U = 0x75;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;

type Member = { key: string; text: string };

/**
 * Returns the canonical form of `text` if it is one valid JSON text (RFC 8259), otherwise undefined.
 *
 * The canonical form has no insignificant whitespace, object members sorted by decoded key (UTF-16 code
 * units, duplicates kept in order), numbers as their exact source lexeme and strings as `JSON.stringify`
 * writes them. Two texts canonicalise equal only if they encode the same value, so the result is safe to
 * fingerprint. Never throws; input nested deeper than {@link MAX_JSON_DEPTH} gives `undefined`.
 *
 * @example
 * ```ts
 * import { canonicalJson } from "@idempotency/core";
 *
 * canonicalJson('{ "b": 1.0, "a": "\\u0041" }'); // '{"a":"A","b":1.0}'
 * canonicalJson("{'a': 1}"); // undefined
 * ```
 */
export function canonicalJson(text: string): string | undefined {
  const parser = new Parser(text);
  parser.skipWhitespace();
  const result = parser.value(0);
  if (result === undefined) return undefined;
  parser.skipWhitespace();
  return parser.pos === text.length ? result : undefined;
}

class Parser {
  pos = 0;
  /** The decoded content of the string last read by `string()`, used to sort object keys. */
  decoded = "";
  /** Whether the value last read is written in canonical form already (its canonical text is its source). */
  verbatim = false;

  constructor(readonly text: string) {}

  skipWhitespace(): void {
    const text = this.text;
    let pos = this.pos;
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c !== SPACE && c !== LF && c !== CR && c !== TAB) break;
      pos++;
    }
    this.pos = pos;
  }

  /** Reads the value at `pos` (no leading whitespace) and returns its canonical text. */
  value(depth: number): string | undefined {
    const c = this.text.charCodeAt(this.pos);
    if (c === QUOTE) return this.string();
    if (c === OPEN_BRACE) return depth < MAX_JSON_DEPTH ? this.object(depth + 1) : undefined;
    if (c === OPEN_BRACKET) return depth < MAX_JSON_DEPTH ? this.array(depth + 1) : undefined;
    if (c === MINUS || (c >= ZERO && c <= NINE)) return this.number();
    return this.literal("true") ?? this.literal("false") ?? this.literal("null");
  }

  literal(word: string): string | undefined {
    if (!this.text.startsWith(word, this.pos)) return undefined;
    this.pos += word.length;
    this.verbatim = true;
    return word;
  }

  object(depth: number): string | undefined {
    const text = this.text;
    const start = this.pos;
    this.pos++;
    this.skipWhitespace();
    if (text.charCodeAt(this.pos) === CLOSE_BRACE) {
      this.pos++;
      this.verbatim = this.pos === start + 2;
      return "{}";
    }
    const members: Member[] = [];
    let sorted = true;
    // Whether the canonical text is the source text itself: no whitespace, members in order, every key and
    // value already canonical. Such an object (the common case inside arrays) costs no string building.
    let verbatim = this.pos === start + 1;
    for (;;) {
      if (text.charCodeAt(this.pos) !== QUOTE) return undefined;
      const memberStart = this.pos;
      const keyText = this.string();
      if (keyText === undefined) return undefined;
      let memberVerbatim = this.verbatim;
      const key = this.decoded;
      const colon = this.pos;
      this.skipWhitespace();
      if (text.charCodeAt(this.pos) !== COLON) return undefined;
      this.pos++;
      const valueStart = this.pos;
      this.skipWhitespace();
      memberVerbatim &&= this.pos === valueStart && colon + 1 === valueStart;
      const valueText = this.value(depth);
      if (valueText === undefined) return undefined;
      memberVerbatim &&= this.verbatim;
      const last = members[members.length - 1];
      if (last !== undefined && key < last.key) sorted = false;
      members.push({
        key,
        text: memberVerbatim ? text.slice(memberStart, this.pos) : `${keyText}:${valueText}`,
      });
      verbatim &&= memberVerbatim;
      const end = this.pos;
      this.skipWhitespace();
      verbatim &&= this.pos === end;
      const c = text.charCodeAt(this.pos++);
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) return undefined;
      const next = this.pos;
      this.skipWhitespace();
      verbatim &&= this.pos === next;
    }
    if (verbatim && sorted) {
      this.verbatim = true;
      return text.slice(start, this.pos);
    }
    this.verbatim = false;
    if (!sorted) sortMembers(members);
    let out = "{";
    for (let i = 0; i < members.length; i++) {
      if (i > 0) out += ",";
      out += (members[i] as Member).text;
    }
    return `${out}}`;
  }

  array(depth: number): string | undefined {
    const text = this.text;
    const start = this.pos;
    this.pos++;
    this.skipWhitespace();
    if (text.charCodeAt(this.pos) === CLOSE_BRACKET) {
      this.pos++;
      this.verbatim = this.pos === start + 2;
      return "[]";
    }
    let verbatim = this.pos === start + 1;
    let out = "[";
    for (;;) {
      const item = this.value(depth);
      if (item === undefined) return undefined;
      verbatim &&= this.verbatim;
      out += item;
      const end = this.pos;
      this.skipWhitespace();
      verbatim &&= this.pos === end;
      const c = text.charCodeAt(this.pos++);
      if (c === CLOSE_BRACKET) {
        this.verbatim = verbatim;
        return verbatim ? text.slice(start, this.pos) : `${out}]`;
      }
      if (c !== COMMA) return undefined;
      out += ",";
      const next = this.pos;
      this.skipWhitespace();
      verbatim &&= this.pos === next;
    }
  }

  /** Keeps the exact lexeme, so `1.0`, `1e2`, `-0` and integers beyond 2^53 never collapse into others. */
  number(): string | undefined {
    const text = this.text;
    const start = this.pos;
    let pos = start;
    if (text.charCodeAt(pos) === MINUS) pos++;
    let c = text.charCodeAt(pos);
    if (c === ZERO) {
      pos++;
    } else if (c > ZERO && c <= NINE) {
      pos = skipDigits(text, pos + 1);
    } else {
      return undefined;
    }
    if (text.charCodeAt(pos) === DOT) {
      const fractionStart = pos + 1;
      pos = skipDigits(text, fractionStart);
      if (pos === fractionStart) return undefined;
    }
    c = text.charCodeAt(pos);
    if (c === LOWER_E || c === UPPER_E) {
      pos++;
      c = text.charCodeAt(pos);
      if (c === PLUS || c === MINUS) pos++;
      const exponentStart = pos;
      pos = skipDigits(text, exponentStart);
      if (pos === exponentStart) return undefined;
    }
    this.pos = pos;
    this.verbatim = true;
    return text.slice(start, pos);
  }

  /** Reads the string at `pos`, sets `decoded` and returns it as `JSON.stringify(decoded)` writes it. */
  string(): string | undefined {
    const text = this.text;
    const start = this.pos + 1;
    let pos = start;
    let surrogate = false;
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c === QUOTE) break;
      if (c === BACKSLASH) return this.escapedString(start, pos);
      // Also catches NaN (end of text): no comparison with NaN is true, so test the valid range instead.
      if (!(c >= SPACE)) return undefined;
      if (c >= 0xd800 && c <= 0xdfff) surrogate = true;
      pos++;
    }
    this.pos = pos + 1;
    const decoded = text.slice(start, pos);
    this.decoded = decoded;
    // JSON.stringify escapes lone surrogates; anything else without a backslash it writes back unchanged.
    this.verbatim = !surrogate;
    return surrogate ? JSON.stringify(decoded) : text.slice(start - 1, pos + 1);
  }

  /** The slow path of `string()`, from the first backslash at `pos`. */
  escapedString(start: number, pos: number): string | undefined {
    const text = this.text;
    let decoded = "";
    let runStart = start;
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c === QUOTE) break;
      if (!(c >= SPACE)) return undefined;
      if (c !== BACKSLASH) {
        pos++;
        continue;
      }
      decoded += text.slice(runStart, pos);
      const unit = decodeEscape(text, pos + 1);
      if (unit === undefined) return undefined;
      decoded += unit;
      pos += text.charCodeAt(pos + 1) === LOWER_U ? 6 : 2;
      runStart = pos;
    }
    decoded += text.slice(runStart, pos);
    this.pos = pos + 1;
    this.decoded = decoded;
    const canonical = JSON.stringify(decoded);
    this.verbatim = canonical === text.slice(start - 1, pos + 1);
    return canonical;
  }
}

/** Decodes the escape whose letter is at `pos`; lone surrogates from `\uXXXX` are kept as code units. */
function decodeEscape(text: string, pos: number): string | undefined {
  switch (text.charCodeAt(pos)) {
    case QUOTE:
      return '"';
    case BACKSLASH:
      return "\\";
    case SLASH:
      return "/";
    case 0x62:
      return "\b";
    case 0x66:
      return "\f";
    case 0x6e:
      return "\n";
    case 0x72:
      return "\r";
    case 0x74:
      return "\t";
    case LOWER_U: {
      let code = 0;
      for (let i = pos + 1; i < pos + 5; i++) {
        const digit = hexValue(text.charCodeAt(i));
        if (digit < 0) return undefined;
        code = code * 16 + digit;
      }
      return String.fromCharCode(code);
    }
    default:
      return undefined;
  }
}

function hexValue(c: number): number {
  if (c >= ZERO && c <= NINE) return c - ZERO;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

function skipDigits(text: string, pos: number): number {
  let c = text.charCodeAt(pos);
  while (c >= ZERO && c <= NINE) c = text.charCodeAt(++pos);
  return pos;
}

/**
 * Sorts members by key, stably (duplicate keys keep their source order): insertion sort for the few members
 * most objects have, `Array.prototype.sort` (also stable) beyond.
 */
function sortMembers(members: Member[]): void {
  if (members.length > 16) {
    members.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return;
  }
  for (let i = 1; i < members.length; i++) {
    const member = members[i] as Member;
    let j = i - 1;
    while (j >= 0 && (members[j] as Member).key > member.key) {
      members[j + 1] = members[j] as Member;
      j--;
    }
    members[j + 1] = member;
  }
}

/** What {@link ByteCanonicaliser} returns when the bytes need the string parser (escapes, some keys). */
const SLOW = -2;
/** What {@link ByteCanonicaliser} returns for bytes that are not one JSON text. */
const INVALID = -1;

/** Scratch output below this size is kept between calls; larger bodies get a buffer of their own. */
const SCRATCH_BYTES = 64 * 1024;
let scratch = Buffer.allocUnsafeSlow(4096);
let sortScratch = Buffer.allocUnsafeSlow(4096);
/**
 * Member bounds of the objects being read, four numbers a member (key start, key end, output start, output
 * end), as a stack shared by the nested objects; `order` is the scratch for sorting one object's members.
 */
let members = new Int32Array(1024);
let order = new Int32Array(256);

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The UTF-8 bytes of `canonicalJson(new TextDecoder("utf-8", { fatal: true }).decode(body))`, or undefined when
 * that is undefined (not UTF-8, not one JSON text), computed without decoding the body into a string for the
 * common case: no escapes in strings and object keys below U+E000. Anything else takes the string parser, so
 * the output is byte-identical to it by construction there and by differential tests here.
 *
 * The returned bytes may be a view of a buffer that the next call overwrites: use them before calling again.
 */
export function canonicalJsonUtf8(body: Uint8Array): Uint8Array | undefined {
  if (!isUtf8(body)) return undefined;
  // TextDecoder drops one leading byte order mark (ignoreBOM is false), so the string parser never sees it.
  const start = body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf ? 3 : 0;
  if (body.length <= SCRATCH_BYTES && scratch.length < body.length)
    scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
  const out = body.length <= SCRATCH_BYTES ? scratch : Buffer.allocUnsafeSlow(body.length);
  const writer = new ByteCanonicaliser(body, start, out);
  const end = writer.text();
  // A body with very many members grew the shared stacks: let them go rather than keep them for good.
  if (members.length > 1 << 16) members = new Int32Array(1024);
  if (order.length > 1 << 14) order = new Int32Array(256);
  if (end === INVALID) return undefined;
  if (end === SLOW) {
    const canonical = canonicalJson(utf8Decoder.decode(body));
    return canonical === undefined ? undefined : Buffer.from(canonical, "utf8");
  }
  return writer.out.subarray(0, end);
}

/**
 * Reads JSON bytes (known to be valid UTF-8) and writes their canonical form into `out`, which is at least as
 * long as the input: on this path the canonical form is never longer (strings and numbers are copied as they
 * are, whitespace is dropped, members are only reordered).
 */
class ByteCanonicaliser {
  pos: number;
  /** The output's length so far. */
  length = 0;
  /** The top of the shared `members` stack. */
  top = 0;

  constructor(
    readonly input: Uint8Array,
    start: number,
    readonly out: Buffer,
  ) {
    this.pos = start;
  }

  /** The whole text: one value between optional whitespace. Returns the output's end, SLOW or INVALID. */
  text(): number {
    this.skipWhitespace();
    const result = this.value(0);
    if (result < 0) return result;
    this.skipWhitespace();
    return this.pos === this.input.length ? this.length : INVALID;
  }

  skipWhitespace(): void {
    const input = this.input;
    const end = input.length;
    let pos = this.pos;
    while (pos < end) {
      const c = input[pos] as number;
      if (c !== SPACE && c !== LF && c !== CR && c !== TAB) break;
      pos++;
    }
    this.pos = pos;
  }

  /** Reads the value at `pos` and writes it; returns 0, SLOW or INVALID. */
  value(depth: number): number {
    if (this.pos >= this.input.length) return INVALID;
    const c = this.input[this.pos] as number;
    if (c === QUOTE) return this.string(false);
    if (c === OPEN_BRACE) return depth < MAX_JSON_DEPTH ? this.object(depth + 1) : INVALID;
    if (c === OPEN_BRACKET) return depth < MAX_JSON_DEPTH ? this.array(depth + 1) : INVALID;
    if (c === MINUS || (c >= ZERO && c <= NINE)) return this.number();
    if (c === 0x74) return this.literal(0x74, 0x72, 0x75, 0x65, 4); // true
    if (c === 0x66) return this.literal(0x66, 0x61, 0x6c, 0x73, 5); // false (its last byte is checked below)
    if (c === 0x6e) return this.literal(0x6e, 0x75, 0x6c, 0x6c, 4); // null
    return INVALID;
  }

  literal(a: number, b: number, c: number, d: number, size: number): number {
    const input = this.input;
    const pos = this.pos;
    if (pos + size > input.length) return INVALID;
    if (input[pos] !== a || input[pos + 1] !== b || input[pos + 2] !== c || input[pos + 3] !== d)
      return INVALID;
    if (size === 5 && input[pos + 4] !== LOWER_E) return INVALID;
    this.copy(pos, pos + size);
    this.pos = pos + size;
    return 0;
  }

  copy(from: number, to: number): void {
    const input = this.input;
    const out = this.out;
    let o = this.length;
    for (let i = from; i < to; i++) out[o++] = input[i] as number;
    this.length = o;
  }

  object(depth: number): number {
    const input = this.input;
    const out = this.out;
    const objectStart = this.length;
    out[this.length++] = OPEN_BRACE;
    this.pos++;
    this.skipWhitespace();
    if (input[this.pos] === CLOSE_BRACE) {
      this.pos++;
      out[this.length++] = CLOSE_BRACE;
      return 0;
    }
    const base = this.top;
    let sorted = true;
    for (;;) {
      if (input[this.pos] !== QUOTE) return INVALID;
      const keyStart = this.pos + 1;
      const memberStart = this.length;
      const keyResult = this.string(true);
      if (keyResult < 0) return keyResult;
      const keyEnd = this.pos - 1;
      this.skipWhitespace();
      if (input[this.pos] !== COLON) return INVALID;
      this.pos++;
      out[this.length++] = COLON;
      this.skipWhitespace();
      const valueResult = this.value(depth);
      if (valueResult < 0) return valueResult;
      let top = this.top;
      if (
        sorted &&
        top > base &&
        compareBytes(input, keyStart, keyEnd, members[top - 4] as number, members[top - 3] as number) < 0
      ) {
        sorted = false;
      }
      if (top + 4 > members.length) {
        const grown = new Int32Array(members.length * 2);
        grown.set(members);
        members = grown;
      }
      members[top++] = keyStart;
      members[top++] = keyEnd;
      members[top++] = memberStart;
      members[top++] = this.length;
      this.top = top;
      this.skipWhitespace();
      const c = input[this.pos++];
      if (c === CLOSE_BRACE) break;
      if (c !== COMMA) return INVALID;
      out[this.length++] = COMMA;
      this.skipWhitespace();
    }
    if (!sorted) this.reorder(base, objectStart + 1);
    this.top = base;
    out[this.length++] = CLOSE_BRACE;
    return 0;
  }

  /** Rewrites the members written since `from` in key order (stable: duplicate keys keep source order). */
  reorder(base: number, from: number): void {
    const count = (this.top - base) / 4;
    if (order.length < count) order = new Int32Array(Math.max(count, order.length * 2));
    const input = this.input;
    if (count > 16) {
      const sortedMembers = Array.from({ length: count }, (_, i) => base + i * 4);
      sortedMembers.sort((a, b) => compareKeys(input, a, b));
      order.set(sortedMembers);
    } else {
      for (let i = 0; i < count; i++) {
        const member = base + i * 4;
        let j = i - 1;
        while (j >= 0 && compareKeys(input, order[j] as number, member) > 0) {
          order[j + 1] = order[j] as number;
          j--;
        }
        order[j + 1] = member;
      }
    }
    const size = this.length - from;
    if (size <= SCRATCH_BYTES && sortScratch.length < size)
      sortScratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
    const saved = size <= SCRATCH_BYTES ? sortScratch : Buffer.allocUnsafeSlow(size);
    const out = this.out;
    out.copy(saved, 0, from, this.length);
    let o = from;
    for (let i = 0; i < count; i++) {
      if (i > 0) out[o++] = COMMA;
      const member = order[i] as number;
      const start = (members[member + 2] as number) - from;
      const end = (members[member + 3] as number) - from;
      if (end - start > 32) o += saved.copy(out, o, start, end);
      else for (let k = start; k < end; k++) out[o++] = saved[k] as number;
    }
    this.length = o;
  }

  array(depth: number): number {
    const input = this.input;
    const out = this.out;
    out[this.length++] = OPEN_BRACKET;
    this.pos++;
    this.skipWhitespace();
    if (input[this.pos] === CLOSE_BRACKET) {
      this.pos++;
      out[this.length++] = CLOSE_BRACKET;
      return 0;
    }
    for (;;) {
      const result = this.value(depth);
      if (result < 0) return result;
      this.skipWhitespace();
      const c = input[this.pos++];
      if (c === CLOSE_BRACKET) {
        out[this.length++] = CLOSE_BRACKET;
        return 0;
      }
      if (c !== COMMA) return INVALID;
      out[this.length++] = COMMA;
      this.skipWhitespace();
    }
  }

  number(): number {
    const input = this.input;
    const start = this.pos;
    let pos = start;
    if (input[pos] === MINUS) pos++;
    let c = input[pos];
    if (c === ZERO) {
      pos++;
    } else if (c !== undefined && c > ZERO && c <= NINE) {
      pos = skipDigitBytes(input, pos + 1);
    } else {
      return INVALID;
    }
    if (input[pos] === DOT) {
      const fractionStart = pos + 1;
      pos = skipDigitBytes(input, fractionStart);
      if (pos === fractionStart) return INVALID;
    }
    c = input[pos];
    if (c === LOWER_E || c === UPPER_E) {
      pos++;
      c = input[pos];
      if (c === PLUS || c === MINUS) pos++;
      const exponentStart = pos;
      pos = skipDigitBytes(input, exponentStart);
      if (pos === exponentStart) return INVALID;
    }
    this.copy(start, pos);
    this.pos = pos;
    return 0;
  }

  /**
   * Copies the string at `pos` (its bytes are its canonical form when it has no backslash: the input is valid
   * UTF-8, so it holds no lone surrogate that JSON.stringify would escape). Escapes take the string parser, and
   * so do keys with a byte from 0xEE, whose code points (U+E000 and above) sort differently in UTF-16.
   */
  string(key: boolean): number {
    const input = this.input;
    const end = input.length;
    const start = this.pos;
    let pos = start + 1;
    for (;;) {
      if (pos >= end) return INVALID;
      const c = input[pos] as number;
      if (c === QUOTE) break;
      if (c === BACKSLASH) return SLOW;
      if (c < SPACE) return INVALID;
      if (key && c >= 0xee) return SLOW;
      pos++;
    }
    this.copy(start, pos + 1);
    this.pos = pos + 1;
    return 0;
  }
}

/** Compares the keys of two members (their offsets in `members`) as unsigned byte strings. */
function compareKeys(bytes: Uint8Array, a: number, b: number): number {
  return compareBytes(
    bytes,
    members[a] as number,
    members[a + 1] as number,
    members[b] as number,
    members[b + 1] as number,
  );
}

/** Compares two byte ranges of `bytes` as unsigned byte strings. */
function compareBytes(bytes: Uint8Array, aStart: number, aEnd: number, bStart: number, bEnd: number): number {
  const aLength = aEnd - aStart;
  const bLength = bEnd - bStart;
  const length = Math.min(aLength, bLength);
  for (let i = 0; i < length; i++) {
    const difference = (bytes[aStart + i] as number) - (bytes[bStart + i] as number);
    if (difference !== 0) return difference;
  }
  return aLength - bLength;
}

function skipDigitBytes(bytes: Uint8Array, pos: number): number {
  const end = bytes.length;
  while (pos < end) {
    const c = bytes[pos] as number;
    if (c < ZERO || c > NINE) break;
    pos++;
  }
  return pos;
}
