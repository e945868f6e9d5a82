import { describe, expect, it } from "vitest";
import { parseIdempotencyKey } from "../src/key.js";

const MAX = 255;

function reasonOf(value: string, maxLength = MAX): string {
  const result = parseIdempotencyKey(value, maxLength);
  if (result.ok) throw new Error(`expected ${JSON.stringify(value)} to be rejected, got key ${result.key}`);
  return result.reason;
}

describe("parseIdempotencyKey: raw keys", () => {
  it.each([
    ["8e03978e-40d5-43e8-bc93-6894a57f9324"],
    ["a"],
    ["~"],
    ["!"],
    ["order:42/retry#1"],
    ["!#$%&'()*+-./0123456789:;<=>?@AZ[\\]^_`az{|}~"],
  ])("accepts the visible ASCII key %s as is", (value) => {
    expect(parseIdempotencyKey(value, MAX)).toEqual({ ok: true, key: value });
  });

  it("accepts a key of exactly maxLength characters", () => {
    const key = "k".repeat(MAX);
    expect(parseIdempotencyKey(key, MAX)).toEqual({ ok: true, key });
  });

  it("rejects a key one character over maxLength, giving its length and the limit", () => {
    expect(parseIdempotencyKey("k".repeat(256), MAX)).toEqual({
      ok: false,
      reason: "it is 256 characters long; the limit is 255",
    });
  });

  it("ignores surrounding spaces and horizontal tabs", () => {
    expect(parseIdempotencyKey(" \t abc-123\t ", MAX)).toEqual({ ok: true, key: "abc-123" });
  });

  it("does not count surrounding whitespace towards the length", () => {
    expect(parseIdempotencyKey(`  ${"k".repeat(MAX)}\t`, MAX)).toEqual({ ok: true, key: "k".repeat(MAX) });
  });

  it.each([[""], [" "], ["\t \t"]])("rejects the empty or whitespace-only value %j", (value) => {
    expect(parseIdempotencyKey(value, MAX)).toEqual({
      ok: false,
      reason: "it is empty; send 1 to 255 characters",
    });
  });

  it.each([["a, b"], ["a,b"], ["a,"], [",a"]])(
    "rejects the comma-separated list %j as more than one value",
    (value) => {
      expect(reasonOf(value)).toBe(
        "it contains more than one value (a comma-separated list or repeated header); send exactly one key",
      );
    },
  );

  it("rejects a control character, naming it as 0xNN with its 1-based position in the trimmed value", () => {
    expect(parseIdempotencyKey("  abc\ndef", MAX)).toEqual({
      ok: false,
      reason: 'it contains the character 0x0a at position 4; use visible ASCII (0x21-0x7E) without " or ,',
    });
  });

  it.each([
    ["ab\u0000", "0x00 at position 3"],
    ["a b", "0x20 at position 2"],
    ["a\tb", "0x09 at position 2"],
    ["ab\u007f", "0x7f at position 3"],
    ["caf\u00e9", '"\u00e9" (U+00E9) at position 4'],
    // How Node hands a binding the UTF-8 bytes of "café": one character per byte. The client typed "é".
    ["caf\u00c3\u00a9", '"\u00e9" (U+00E9) at position 4'],
    ["\u00e2\u0082\u00ac5", '"\u20ac" (U+20AC) at position 1'],
    ["a\u{1f600}", '"\u{1f600}" (U+1F600) at position 2'],
    ["a\u0085", "U+0085 at position 2"],
    ["a\ud800", "U+D800 at position 2"],
  ])("rejects the invalid character in %j as %s, echoing only printable characters", (value, expected) => {
    const reason = reasonOf(value);
    expect(reason).toContain(`the character ${expected}`);
    // Never a control character or a lone surrogate half in a reason that reaches logs.
    const unsafe = [...reason].filter((character) => {
      const c = character.codePointAt(0) ?? 0;
      return c < 0x20 || (c >= 0x7f && c < 0xa0) || (c >= 0xd800 && c <= 0xdfff);
    });
    expect(unsafe).toEqual([]);
  });

  it('rejects a raw key with a " in the middle', () => {
    expect(reasonOf('ab"c')).toMatch(/^it contains the character " at position 3;/);
  });
});

describe("parseIdempotencyKey: quoted keys (RFC 8941 sf-string)", () => {
  it("returns the content of a quoted key", () => {
    expect(parseIdempotencyKey('"abc"', MAX)).toEqual({ ok: true, key: "abc" });
  });

  it('unescapes \\" and \\\\', () => {
    expect(parseIdempotencyKey('"a\\"b"', MAX)).toEqual({ ok: true, key: 'a"b' });
    expect(parseIdempotencyKey('"a\\\\b"', MAX)).toEqual({ ok: true, key: "a\\b" });
    expect(parseIdempotencyKey('"\\"\\\\\\""', MAX)).toEqual({ ok: true, key: '"\\"' });
  });

  it("allows spaces and commas inside the quotes", () => {
    expect(parseIdempotencyKey('"a,b"', MAX)).toEqual({ ok: true, key: "a,b" });
    expect(parseIdempotencyKey('" a b "', MAX)).toEqual({ ok: true, key: " a b " });
  });

  it("ignores whitespace around the quoted string", () => {
    expect(parseIdempotencyKey(' \t"abc"\t ', MAX)).toEqual({ ok: true, key: "abc" });
  });

  it("rejects a second list member after the quoted string", () => {
    expect(reasonOf('"a", "b"')).toMatch(/^it contains more than one value/);
    expect(reasonOf('"a",b')).toMatch(/^it contains more than one value/);
  });

  it("rejects parameters after the quoted string", () => {
    expect(reasonOf('"a";x=1')).toBe(
      "its quoted string is followed by parameters at position 4; send the key alone",
    );
  });

  it("rejects other characters after the closing quote", () => {
    expect(reasonOf('"a"b')).toMatch(/^it has the character b after the closing quote at position 4;/);
    expect(reasonOf('"a" \u00e9')).toMatch(
      /^it has the character "\u00e9" \(U\+00E9\) after the closing quote at position 5;/,
    );
  });

  it("rejects the empty quoted string", () => {
    expect(parseIdempotencyKey('""', MAX)).toEqual({
      ok: false,
      reason: "it is empty; send 1 to 255 characters",
    });
  });

  it("checks the length after unquoting", () => {
    const key = `${"k".repeat(MAX - 1)}"`;
    const quoted = `"${"k".repeat(MAX - 1)}\\""`;
    expect(parseIdempotencyKey(quoted, MAX)).toEqual({ ok: true, key });
    expect(reasonOf(`"${"k".repeat(MAX)}\\""`)).toBe(
      "it is 256 characters long after unquoting; the limit is 255",
    );
  });

  it.each([['"abc'], ['"'], ['"abc\\"'], ['"abc\\']])(
    "rejects the unterminated quoted string %j",
    (value) => {
      expect(reasonOf(value)).toBe("its quoted string is not terminated");
    },
  );

  it('rejects an escape other than \\" and \\\\, naming it and the backslash position', () => {
    expect(reasonOf('"a\\xb"')).toBe(
      'its quoted string contains an invalid escape \\x at position 3; only \\" and \\\\ may be escaped',
    );
    expect(reasonOf('"\\n"')).toMatch(/^its quoted string contains an invalid escape \\n at position 2;/);
  });

  it.each([
    ['"a\nb"', "0x0a at position 3"],
    ['"a\u007fb"', "0x7f at position 3"],
    ['"caf\u00e9"', '"\u00e9" (U+00E9) at position 5'],
    ['"a\\\u0001"', "0x01 at position 4"],
  ])("rejects the non-printable character in the quoted string %j as %s", (value, expected) => {
    const reason = reasonOf(value);
    expect(reason).toBe(
      `its quoted string contains the character ${expected}; use printable ASCII (0x20-0x7E)`,
    );
  });
});
