import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    // .scratch/ is a gitignored work area: files there are not the suite.
    exclude: ["node_modules/**", ".build/**", ".scratch/**"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration files each run workerd and real agents with llama.cpp; on 2 cores they run one at a time.
    fileParallelism: false,
  },
});
