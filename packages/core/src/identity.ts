import { createHash } from "node:crypto";

/**
 * The record's identity: SHA-256 over (scope, method, path, key), each part length-prefixed so that no
 * choice of strings can make two different tuples hash the same input. The hex digest is the only key a
 * store ever sees, so attacker-chosen strings never become raw store keys.
 */
export function identityKey(scope: string, method: string, path: string, key: string): string {
  const hash = createHash("sha256");
  for (const part of [scope, method, path, key]) {
    hash.update(`${Buffer.byteLength(part)}:`);
    hash.update(part);
  }
  return hash.digest("hex");
}
