import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function modified(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0;
}

/**
 * Child processes import `@idempotency/sqlite` from `dist`, as users do. CI builds before testing; a local
 * `pnpm test` after editing `src` rebuilds here, so the children never run stale code.
 */
export default function setup(): void {
  const sources = [
    ...readdirSync(join(root, "src")).map((name) => join(root, "src", name)),
    join(root, "tsup.config.ts"),
    join(root, "package.json"),
  ];
  const newestSource = Math.max(...sources.map(modified));
  if (modified(join(root, "dist", "index.js")) >= newestSource) return;
  execFileSync(process.execPath, [join(root, "node_modules", "tsup", "dist", "cli-default.js")], {
    cwd: root,
    stdio: "inherit",
  });
}
