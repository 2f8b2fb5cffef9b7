import { defineConfig } from "vitest/config";

// No testkit global setup here: testkit depends on this package. The migration test makes its own database.
export default defineConfig({
  test: {
    include: ["src/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
