import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** Reads one `kB` field (VmRSS, VmHWM) of /proc/<pid>/status, in bytes; 0 when the process is gone. */
export function statusBytes(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ")".
    const ppid = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1];
    return ppid === undefined ? undefined : Number(ppid);
  } catch {
    return undefined;
  }
}

export function commandName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** Every live descendant of `root` (children, grandchildren, ...). */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const parent = parentOf(pid);
    if (parent === undefined) continue;
    children.set(parent, [...(children.get(parent) ?? []), pid]);
  }
  const out: number[] = [];
  const queue = [...(children.get(root) ?? [])];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/**
 * Tracks the peak resident memory of a set of processes (a gateway may be several, e.g. nginx's
 * master and workers): samples the sum of their VmRSS, and also takes each one's own high-water
 * mark (VmHWM), so a peak between samples is not missed for a single process.
 */
export class PeakRss {
  private peakSum = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pids: () => number[], intervalMs = 100) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  sample(): void {
    const sum = this.pids().reduce((n, pid) => n + statusBytes(pid, "VmRSS"), 0);
    this.peakSum = Math.max(this.peakSum, sum);
  }

  /** Stops sampling; the peak in bytes (at least the high-water mark of the largest process). */
  stop(): number {
    this.sample();
    clearInterval(this.timer);
    const hwm = Math.max(0, ...this.pids().map((pid) => statusBytes(pid, "VmHWM")));
    return Math.max(this.peakSum, hwm);
  }
}

/** Clock ticks per second of /proc/<pid>/stat's CPU times (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** CPU time (user + system) a process has used so far, in milliseconds; 0 when it is gone. */
export function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 once pid and comm are cut off.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

/** Total CPU milliseconds of `pids` (threads included). */
export function totalCpuMs(pids: readonly number[]): number {
  return pids.reduce((n, pid) => n + cpuMs(pid), 0);
}

/**
 * Sets the CPU affinity of every thread of each process (util-linux `taskset`); threads they
 * start later inherit it. False when any could not be set (no taskset, a process gone). A thread
 * that ends while taskset walks the process's threads fails that walk: it is tried again.
 */
export function pinToCpus(pids: readonly number[], cpus: readonly number[]): boolean {
  const pin = (pid: number): boolean => spawnSync("taskset", ["-a", "-cp", cpus.join(","), String(pid)], { stdio: "ignore" }).status === 0;
  return pids.every((pid) => [1, 2, 3, 4, 5].some(() => pin(pid)));
}

/**
 * Gives the engine's host process a CPU of its own (the last one) and puts the gateway and this
 * process (the load generator) on the others, as in production, where the gateway never shares
 * the miner's CPU; on a 2-core machine it would otherwise take time from the engine. Returns a
 * note for the row and how to undo it, or null (nothing left pinned) with one CPU or no taskset.
 */
export function isolateEngineHost(engineHost: readonly number[], others: readonly number[]): { note: string; undo(): void } | null {
  const count = availableParallelism();
  if (count < 2) return null;
  const all = Array.from({ length: count }, (_, i) => i);
  const engineCpu = [count - 1];
  const rest = all.slice(0, -1);
  const undo = (): void => void [...engineHost, ...others].forEach((pid) => pinToCpus([pid], all));
  const pinned = pinToCpus(engineHost, engineCpu) && pinToCpus(others.filter((pid) => !engineHost.includes(pid)), rest);
  if (!pinned) {
    undo();
    return null;
  }
  return { note: `engine host pinned to CPU ${engineCpu[0]}; gateway and load generator on CPU ${rest.join(",")}`, undo };
}
