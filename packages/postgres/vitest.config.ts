import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Checks once that PostgreSQL answers at DATABASE_URL, and fails the run under CI=true when it does not.
    globalSetup: ["test/global-setup.ts"],
    // One file at a time: the conformance suite's real-time leases should not share 2 cores with other files.
    fileParallelism: false,
  },
});
