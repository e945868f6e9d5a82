import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Real servers on a small shared machine: the waits between attempts run on an injected clock, but
    // nothing should fail for being slow.
    testTimeout: 30_000,
  },
});
