import { spawn } from "node:child_process";
import { TEST_SECRETS } from "./gateway.ts";
import { ROOT } from "./paths.ts";

/** Whether a process with this pid exists. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a command to its end, collecting its output. */
export function runToEnd(cmd: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Run `scripts/admin.ts` (`npm run admin`) as an operator would, against a test gateway. */
export function adminCli(gatewayUrl: string, args: string[]): Promise<CliResult> {
  return runToEnd(`${ROOT}/node_modules/.bin/tsx`, [`${ROOT}/scripts/admin.ts`, ...args], {
    cwd: ROOT,
    env: { ...process.env, SLUICE_URL: gatewayUrl, SLUICE_ADMIN_SECRET: TEST_SECRETS.ADMIN_JWT_SECRET },
  });
}
