import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The multi-process tests run child processes on the built package: build it first when it is stale.
    globalSetup: ["test/global-setup.ts"],
    // One file at a time: the real-time conformance leases should not share 2 cores with 4 child processes.
    fileParallelism: false,
  },
});
