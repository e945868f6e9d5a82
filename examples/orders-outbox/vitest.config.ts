import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Every test starts processes on test/child.ts through tsx: on a loaded 2-core CI machine a start-up
    // alone can take longer than vitest's default 5 s.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
