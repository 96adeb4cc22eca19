// Runs headplane's API integration tests (tests/integration/api) with our env.ts; the define
// stands in for the version headplane's own build injects into its User-Agent.
import { resolve } from "node:path";
import { defineConfig } from "vitest/config";

export default defineConfig({
  define: { __VERSION__: JSON.stringify("api-check") },
  resolve: { alias: { "~": resolve(import.meta.dirname, "app") } },
  test: {
    include: ["tests/integration/api/**/*.test.ts"],
    testTimeout: 60_000,
    environment: "node",
    fileParallelism: false,
  },
});
