import { describe, expect, it } from "vitest";
import { decodeResponse, encodeResponse, IdempotencyStoreError } from "../src/index.js";

describe("response encoding", () => {
  it("round-trips status, repeated headers in order, and binary bodies", () => {
    const body = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
    const response = {
      status: 201,
      headers: [
        ["content-type", "application/octet-stream"],
        ["x-multi", "a"],
        ["x-multi", "b"],
        ["x-latin1", "caf\u00e9"],
        ["x-empty", ""],
      ] as Array<[string, string]>,
      body,
    };
    expect(decodeResponse(encodeResponse(response))).toEqual(response);
  });

  it("distinguishes an empty body from a body that was not stored", () => {
    const empty = decodeResponse(encodeResponse({ status: 204, headers: [], body: new Uint8Array(0) }));
    const omitted = decodeResponse(
      encodeResponse({ status: 201, headers: [["location", "/a"]], body: null }),
    );
    expect(empty.body).toEqual(new Uint8Array(0));
    expect(omitted).toEqual({ status: 201, headers: [["location", "/a"]], body: null });
  });

  it("starts with a version byte", () => {
    expect(encodeResponse({ status: 200, headers: [], body: new Uint8Array(0) })[0]).toBe(1);
  });

  it("rejects unknown versions and truncated bytes with a store error", () => {
    const bytes = encodeResponse({ status: 200, headers: [["a", "b"]], body: new Uint8Array([1]) });
    expect(() => decodeResponse(Uint8Array.of(9, ...bytes.subarray(1)))).toThrow(
      /unknown encoding version 9/,
    );
    expect(() => decodeResponse(bytes.subarray(0, 9))).toThrow(IdempotencyStoreError);
    expect(() => decodeResponse(new Uint8Array(2))).toThrow(/shorter than its header/);
  });

  it("decodes from a view into a larger buffer", () => {
    const bytes = encodeResponse({ status: 200, headers: [["k", "v"]], body: Uint8Array.of(1, 2, 3) });
    const padded = new Uint8Array(bytes.length + 10);
    padded.set(bytes, 5);
    expect(decodeResponse(padded.subarray(5, 5 + bytes.length)).body).toEqual(Uint8Array.of(1, 2, 3));
  });
});
