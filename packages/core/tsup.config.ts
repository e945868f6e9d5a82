import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts", "src/node.ts", "src/testing.ts", "src/web.ts"],
  // One copy of each module across the entries, in CommonJS too: an error thrown by `@idempotency/core/node`
  // `/testing` or `/web` is an instance of the class `@idempotency/core` exports.
  splitting: true,
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: true,
  target: "node20",
});
