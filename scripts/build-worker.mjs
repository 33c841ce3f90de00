#!/usr/bin/env node
// Bundles the gateway exactly as `wrangler deploy` would, into .build/worker (used by tests and the bench).
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
execFileSync(
  process.execPath,
  [`${root}/node_modules/wrangler/bin/wrangler.js`, "deploy", "--dry-run", "--outdir", ".build/worker"],
  { cwd: root, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "warn" } },
);
