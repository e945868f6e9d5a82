import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The multi-process tests run child processes on the built package: build it first when it is stale.
    globalSetup: ["test/global-setup.ts"],
  },
});
