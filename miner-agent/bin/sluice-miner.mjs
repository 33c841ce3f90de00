#!/usr/bin/env node
// Runs the TypeScript agent directly (tsx), so miners need no build step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../cli.ts");
try {
  const code = await main(process.argv.slice(2));
  if (code >= 0) process.exit(code);
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
}
