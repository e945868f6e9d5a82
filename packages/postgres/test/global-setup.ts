import { execFileSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { DATABASE_URL, describeUrl, probe } from "./support/database.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Whether PostgreSQL answered at DATABASE_URL; when false the test files skip their tests. */
    postgresReachable: boolean;
  }
}

/**
 * Asks PostgreSQL once, before any test file runs. Under `CI=true` an unreachable database fails the run:
 * CI must never pass by skipping. Elsewhere the tests are skipped with one line saying why.
 */
export default async function setup(project: TestProject): Promise<void> {
  buildWhenStale();
  const failure = await probe(DATABASE_URL);
  if (failure !== undefined && process.env.CI === "true") {
    throw new Error(
      `PostgreSQL is not reachable at DATABASE_URL=${describeUrl(DATABASE_URL)} (${failure}). ` +
        "CI=true: the PostgresStore tests must run. Start PostgreSQL or set DATABASE_URL.",
    );
  }
  if (failure !== undefined) {
    console.log(
      `@idempotency/postgres: PostgresStore tests NOT RUN: no PostgreSQL at DATABASE_URL=${describeUrl(DATABASE_URL)} ` +
        `(${failure}). Start PostgreSQL or set DATABASE_URL to run them.`,
    );
  }
  project.provide("postgresReachable", failure === undefined);
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

function modified(path: string): number {
  return statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0;
}

/**
 * The transaction tests' child processes import `@idempotency/postgres` from `dist`, as users do. CI builds
 * before testing; a local `pnpm test` after editing `src` rebuilds here, so the children never run stale code.
 */
function buildWhenStale(): void {
  const sources = [
    ...readdirSync(join(root, "src")).map((name) => join(root, "src", name)),
    join(root, "tsup.config.ts"),
    join(root, "package.json"),
  ];
  if (modified(join(root, "dist", "index.js")) >= Math.max(...sources.map(modified))) return;
  execFileSync(process.execPath, [join(root, "node_modules", "tsup", "dist", "cli-default.js")], {
    cwd: root,
    stdio: "inherit",
  });
}
