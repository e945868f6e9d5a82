import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // The conformance suite runs against a real MongoDB (MONGODB_URL) with real leases and waits.
    hookTimeout: 60_000,
    testTimeout: 60_000,
  },
});
