import { describe, expect, it } from "vitest";
import { createFingerprinter, hashParts } from "../src/fingerprint.js";
import { identityKey } from "../src/identity.js";

describe("identity", () => {
  it("is a SHA-256 hex digest", () => {
    expect(identityKey("tenant", "POST", "/orders", "k")).toMatch(/^[0-9a-f]{64}$/);
  });

  it("keeps the digests of earlier versions, so records stored before an upgrade are still found", () => {
    // Computed with the original createHash().update(`${length}:`).update(part) loop over the four parts.
    expect(identityKey("tenant-42", "POST", "/orders", "order-7")).toBe(
      "429519b9aec6d04542d8029c9ac2ccb8bef1fbeb8a7628620c2b84d5f052df88",
    );
    expect(identityKey("tënant", "POST", "/ordres/ü", "clé-🔑")).toBe(
      "52f19ea23024501a68e8f55bf2ca565cbd2b575f63c5cd330c87f22b5a63774b",
    );
  });

  it("keeps scopes apart that differ only in lone surrogates (UTF-8 would make each one U+FFFD)", () => {
    // A tenant id from JSON.parse('"t\\ud800"') is a lone surrogate: two such tenants must not share records.
    const identities = new Set([
      identityKey("t\ud800", "POST", "/x", "k"),
      identityKey("t\ud801", "POST", "/x", "k"),
      identityKey("t\udc00", "POST", "/x", "k"),
      identityKey("t\ufffd", "POST", "/x", "k"),
      identityKey("t", "POST", "/x", "\ud800k"),
      identityKey("t", "POST", "/x", "\udbffk"),
      identityKey("a\ud800", "POST", "/x", "\udc00k"),
      identityKey("a\ud800\udc00", "POST", "/x", "k"),
      identityKey("a\u{10000}", "POST", "/x", "k"),
    ]);
    expect(identities.size).toBe(8); // "a\ud800\udc00" is "a\u{10000}": the same well-formed string
    expect(identityKey("a\ud800\udc00", "POST", "/x", "k")).toBe(
      identityKey("a\u{10000}", "POST", "/x", "k"),
    );
    // A code-unit frame can never equal a well-formed one: it starts with "u", they start with a digit.
    expect(identityKey("\ud800", "POST", "/x", "k")).not.toBe(identityKey("u1:d800", "POST", "/x", "k"));
    for (const identity of identities) expect(identity).toMatch(/^[0-9a-f]{64}$/);
  });

  it("cannot be collided by moving characters between parts", () => {
    const keys = new Set([
      identityKey("a:b", "POST", "/x", "k"),
      identityKey("a", "POST", "b:/x", "k"),
      identityKey("a", "POST", "/x", "k"),
      identityKey("a", "POST", "/xk", ""),
      identityKey("a", "POST", "/x\u0000", "k"),
      identityKey("1:a", "POST", "/x", "k"),
    ]);
    expect(keys.size).toBe(6);
  });

  it("differs per scope, method, path and key", () => {
    const base = identityKey("s", "POST", "/p", "k");
    expect(identityKey("t", "POST", "/p", "k")).not.toBe(base);
    expect(identityKey("s", "PATCH", "/p", "k")).not.toBe(base);
    expect(identityKey("s", "POST", "/q", "k")).not.toBe(base);
    expect(identityKey("s", "POST", "/p", "l")).not.toBe(base);
    expect(identityKey("s", "POST", "/p", "k")).toBe(base);
  });
});

describe("fingerprint hashing", () => {
  it("is tagged with the algorithm", () => {
    expect(hashParts(["a"])).toMatch(/^xxh3-128:[0-9a-f]{32}$/);
  });

  it("frames parts so that boundaries matter", () => {
    expect(hashParts(["ab", "c"])).not.toBe(hashParts(["a", "bc"]));
    expect(hashParts(["a", ""])).not.toBe(hashParts(["a"]));
    expect(hashParts([Buffer.from("a")])).toBe(hashParts(["a"]));
  });
});

// Records outlive deployments: a record stored by one version is checked against requests by the next, and
// processes of two versions share one store during a rolling deploy. These values were produced by the first
// released algorithm; if one changes, every stored record would answer 422 (fingerprint) or be missed
// (identity). Change them only together with the algorithm tag (`xxh3-128:`) and a migration note.
describe("stable across versions", () => {
  const headers = (entries: Record<string, string>) => ({
    get: (name: string) => entries[name.toLowerCase()] ?? null,
  });
  const request = (contentType: string) => ({
    method: "POST",
    path: "/orders",
    query: "x=1",
    headers: headers({ "content-type": contentType, "x-sig": "abc" }),
    body: async () => Buffer.from('{ "b": [1.0, 2], "a": "\\u0041" }'),
    native: undefined,
  });

  it("identity keys", () => {
    expect(identityKey("tenant-ü", "POST", "/orders", "k-1")).toBe(
      "bfdd7788b6e15b152731dd75928fd2061338ecbd01ad37c073f3cb29d54e77de",
    );
  });

  it("hashParts over strings (ASCII and not) and bytes", () => {
    expect(hashParts(["http", "POST", "/orders", "a=1", "json", '{"a":1,"b":"é"}'])).toBe(
      "xxh3-128:1e45d05af50611d4f83c0392cebab6eb",
    );
    expect(hashParts(["raw", new Uint8Array([0, 1, 2, 255])])).toBe(
      "xxh3-128:c76d59230a02f123b7fd5ce5185d3905",
    );
    expect(hashParts(["custom", "ünïcode ✓ 🎉"])).toBe("xxh3-128:08bd65256dce998bcc08f25f4fc55351");
  });

  it("request fingerprints: canonical JSON, listed headers, raw bytes", async () => {
    expect(await createFingerprinter(undefined, 1 << 20)(request("application/json"))).toBe(
      "xxh3-128:4b90f392486ea11da25676f294c10513",
    );
    expect(
      await createFingerprinter({ headers: ["X-Sig", "x-missing"] }, 1 << 20)(request("application/json")),
    ).toBe("xxh3-128:b0a4fb171da5ddcb45d1c4d0a4e2ef23");
    expect(await createFingerprinter(undefined, 1 << 20)(request("application/octet-stream"))).toBe(
      "xxh3-128:e68904257dbf395107b5f23e0791cbbf",
    );
  });
});
