import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["machines/**/*.test.ts", "src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration tests spawn runners and daemons; two cores do not like many at once.
    maxWorkers: 2,
  },
});
