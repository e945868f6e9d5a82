import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Each file starts its own redis-server processes (a cluster takes a few seconds); the machine is shared.
    hookTimeout: 60_000,
    testTimeout: 60_000,
  },
});
