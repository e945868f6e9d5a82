import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Real servers on a small shared machine: generous, never a timing assertion.
    testTimeout: 30_000,
    // The Express 4 lease-expiry test throws from an async handler on purpose: Express 4 never sees that
    // rejection (that is the behaviour under test), so Node reports it as unhandled.
    onUnhandledError(error) {
      if (error.name === "Express4AsyncThrow") return false;
    },
  },
});
