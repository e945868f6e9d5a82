import { describe, expect, it } from "vitest";
import { hashParts } from "../src/fingerprint.js";
import { identityKey } from "../src/identity.js";

describe("identity", () => {
  it("is a SHA-256 hex digest", () => {
    expect(identityKey("tenant", "POST", "/orders", "k")).toMatch(/^[0-9a-f]{64}$/);
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
