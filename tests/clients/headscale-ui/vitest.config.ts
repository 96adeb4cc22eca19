// Loads headscale-ui's request code (src/lib/common/apiFunctions.svelte and the modules it
// imports) without its UI: for a .svelte file only its <script context="module"> block is
// kept, compiled as TypeScript. Written for this project.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { transformWithOxc } from "vite";
import { defineConfig } from "vitest/config";

const moduleScript = /<script context="module" lang="ts">([\s\S]*?)<\/script>/;

export default defineConfig({
  plugins: [
    {
      name: "svelte-module-script",
      enforce: "pre",
      async load(id) {
        if (!id.endsWith(".svelte")) return null;
        const m = moduleScript.exec(readFileSync(id, "utf8"));
        if (!m) throw new Error(`${id}: no <script context="module" lang="ts">`);
        return (await transformWithOxc(m[1], id + ".ts", { lang: "ts" })).code;
      },
    },
  ],
  resolve: { alias: { $lib: resolve(import.meta.dirname, "src/lib") } },
  test: {
    include: ["check/**/*.test.ts"],
    setupFiles: ["check/setup.ts"],
    testTimeout: 30_000,
    environment: "node",
  },
});
