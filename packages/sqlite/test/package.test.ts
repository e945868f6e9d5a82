import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const claim = `{ token: "t", fingerprint: "f", leaseMs: 1000, ttlMs: 1000, allowTakeover: false }`;

function run(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: "utf8" }).trim();
}

describe("the built package", () => {
  it("loads from CommonJS and works", () => {
    const output = run([
      "-e",
      `const { SqliteStore, SCHEMA_VERSION } = require("@idempotency/sqlite");
       new SqliteStore({ path: ":memory:" }).begin("k", ${claim})
         .then((result) => console.log(JSON.stringify(result), SCHEMA_VERSION));`,
    ]);
    expect(output).toBe('{"state":"claimed","takeover":false} 1');
  });

  it("loads from ESM and works", () => {
    const output = run([
      "--input-type=module",
      "-e",
      `import { SqliteStore, SCHEMA_VERSION } from "@idempotency/sqlite";
       const result = await new SqliteStore({ path: ":memory:" }).begin("k", ${claim});
       console.log(JSON.stringify(result), SCHEMA_VERSION);`,
    ]);
    expect(output).toBe('{"state":"claimed","takeover":false} 1');
  });
});
