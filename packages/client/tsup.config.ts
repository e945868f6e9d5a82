import { defineConfig } from "tsup";

export default defineConfig({
  entry: ["src/index.ts"],
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: true,
  // Browsers, Deno and Bun load this package too: plain ES2022, which all of them and Node.js 20 run.
  target: "es2022",
});
