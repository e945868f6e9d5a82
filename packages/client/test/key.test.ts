import { describe, expect, it } from "vitest";
import { formatKey, isValidKey, keyOfHeader, randomKey } from "../src/key.js";

describe("keys", () => {
  it('formats a key as an RFC 8941 sf-string, escaping only " and \\', () => {
    expect(formatKey("order-1")).toBe('"order-1"');
    expect(formatKey('a"b\\c d')).toBe('"a\\"b\\\\c d"');
  });

  it("reads the key back from a header: unquoted sf-strings, raw keys as they are", () => {
    expect(keyOfHeader('"order-1"')).toBe("order-1");
    expect(keyOfHeader(' "a\\"b\\\\c" ')).toBe('a"b\\c');
    expect(keyOfHeader("raw-key_1")).toBe("raw-key_1");
    expect(keyOfHeader('"unterminated\\"')).toBe('"unterminated\\"');
    expect(keyOfHeader('"a"b"')).toBe('"a"b"');
    expect(keyOfHeader('"')).toBe('"');
  });

  it("accepts printable ASCII only", () => {
    expect(isValidKey(" ~")).toBe(true);
    expect(isValidKey("")).toBe(false);
    expect(isValidKey("tab\there")).toBe(false);
    expect(isValidKey("é")).toBe(false);
  });

  it("generates version 4 UUIDs, also where crypto.randomUUID is missing (insecure browser contexts)", () => {
    const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    expect(randomKey()).toMatch(v4);
    const original = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(globalThis.crypto), "randomUUID")!;
    Object.defineProperty(Object.getPrototypeOf(globalThis.crypto), "randomUUID", {
      value: undefined,
      configurable: true,
    });
    try {
      const keys = new Set(Array.from({ length: 200 }, randomKey));
      expect(keys.size).toBe(200);
      for (const key of keys) expect(key).toMatch(v4);
    } finally {
      Object.defineProperty(Object.getPrototypeOf(globalThis.crypto), "randomUUID", original);
    }
  });
});
