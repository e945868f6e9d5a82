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
