import { execFileSync } from "node:child_process";
import { ROOT } from "./support/paths.ts";

/** Build what the tests run: the Worker bundle (as wrangler deploys it) and the tiny model. */
export default function setup(): void {
  execFileSync(process.execPath, [`${ROOT}/scripts/build-worker.mjs`], { cwd: ROOT, stdio: "inherit" });
  execFileSync(process.execPath, [`${ROOT}/scripts/make-tiny-model.mjs`], { cwd: ROOT, stdio: "inherit" });
}
