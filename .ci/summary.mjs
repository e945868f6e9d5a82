// Prints one closing line over every package's vitest JSON report, and fails if any report is missing.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

let passed = 0;
let failed = 0;
let skipped = 0;
for (const root of ["packages", "examples"]) {
  if (!existsSync(root)) continue;
  for (const dir of readdirSync(root)) {
    const pkg = join(root, dir, "package.json");
    if (!existsSync(pkg) || !JSON.parse(readFileSync(pkg, "utf8")).scripts?.test) continue;
    const report = join(root, dir, "test-results.json");
    if (!existsSync(report)) {
      console.error(`${join(root, dir)} has a test script but wrote no test-results.json`);
      process.exit(1);
    }
    const results = JSON.parse(readFileSync(report, "utf8"));
    passed += results.numPassedTests;
    failed += results.numFailedTests;
    skipped += results.numPendingTests + results.numTodoTests;
  }
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
