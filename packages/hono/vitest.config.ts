import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Real servers on a small shared machine: no case waits on purpose, but none should fail for being slow.
    testTimeout: 30_000,
  },
});
