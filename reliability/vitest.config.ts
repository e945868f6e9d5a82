import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/global-setup.ts"],
    // Every file starts its own server processes and Redis; on 2 cores, one file at a time keeps the
    // lease timings these scenarios measure away from the other files' load.
    fileParallelism: false,
    hookTimeout: 60_000,
    testTimeout: 120_000,
  },
});
