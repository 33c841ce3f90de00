import { readFileSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { ROOT } from "../test/support/paths.ts";

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  kernel: string;
  /** 1-minute load average when the bench started (other work on the machine skews results). */
  loadAtStart: number;
}

export function machine(): Machine {
  let cpu = cpus()[0]?.model ?? "unknown";
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? cpu;
  } catch { /* not Linux */ }
  return {
    cpu,
    cores: cpus().length,
    memoryGiB: totalmem() / 2 ** 30,
    node: process.version,
    kernel: release(),
    loadAtStart: loadavg()[0]!,
  };
}

/** Installed version of an npm package ("?" when it cannot be read). */
export function packageVersion(name: string): string {
  try {
    return (JSON.parse(readFileSync(`${ROOT}/node_modules/${name}/package.json`, "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}
