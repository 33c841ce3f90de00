import { readdirSync, readFileSync } from "node:fs";

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
