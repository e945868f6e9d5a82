// `pnpm demo`: builds the packages the demo needs, quietly (turbo's output is shown only when the build
// fails), then runs the demo (examples/demo) and exits with its exit code.
import { spawnSync } from "node:child_process";

process.stdout.write("building the packages the demo needs...\n");
const build = spawnSync(
  "pnpm",
  ["exec", "turbo", "run", "build", "--filter=@idempotency-examples/demo^...", "--output-logs=errors-only"],
  { encoding: "utf8", env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" } },
);
if (build.status !== 0) {
  process.stdout.write(build.stdout ?? "");
  process.stderr.write(build.stderr ?? "");
  process.stderr.write(`\nthe build failed${build.error ? `: ${build.error.message}` : ""}\n`);
  process.exit(build.status ?? 1);
}

const demo = spawnSync("pnpm", ["--silent", "--filter", "@idempotency-examples/demo", "start"], {
  stdio: "inherit",
});
process.exit(demo.status ?? (demo.signal ? 130 : 1));
