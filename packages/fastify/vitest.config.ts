import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Real servers on a small shared machine: generous, never a timing assertion.
    testTimeout: 30_000,
  },
});
