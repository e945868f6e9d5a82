import { randomBytes, randomUUID } from "node:crypto";

/** A fresh random key shaped like the core's identities (64 hex characters), so tests never share a record. */
export function newKey(): string {
  return randomBytes(32).toString("hex");
}

/** A fresh random owner token, as the core makes one per attempt. */
export function newToken(): string {
  return randomUUID();
}

/** A fresh random request fingerprint shaped like the core's (`xxh3-128:` and 32 hex characters). */
export function newFingerprint(): string {
  return `xxh3-128:${randomBytes(16).toString("hex")}`;
}

/** ASCII response bytes, for cases where the content only needs to be recognisable. */
export function bytesOf(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}
