import { readdirSync, readlinkSync } from "node:fs";
import { chuteLive, type ChuteLive } from "../targets/gateway.ts";

/**
 * Durable Objects of `className` in workerd's memory now. Locally each one holds its SQLite
 * file open while it is resident and closes it when it is evicted (after hibernating), so the
 * open files say whether the idle agents' objects really left memory.
 */
export function residentObjects(pids: readonly number[], persistDir: string, className: string): number {
  let n = 0;
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (target.startsWith(persistDir) && target.endsWith(".sqlite") && target.includes(className)) n++;
    }
  }
  return n;
}

/** Samples the leases the chute's router holds (its in-flight count over all instances), through the chutes API. */
export class RouterSampler {
  peakInflight = 0;
  samples = 0;
  error: string | undefined;
  private readonly timer: NodeJS.Timeout;
  private busy = false;

  constructor(
    private readonly gateway: { url: string },
    private readonly apiKey: string,
    private readonly chuteId: string,
    everyMs: number,
  ) {
    this.timer = setInterval(() => void this.sample(), everyMs);
  }

  read(): Promise<ChuteLive> {
    return chuteLive(this.gateway, this.apiKey, this.chuteId);
  }

  private async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      this.peakInflight = Math.max(this.peakInflight, (await this.read()).utilization.inflight);
      this.samples++;
    } catch (err) {
      this.error ??= describe(err);
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** An error's first line, with its cause (fetch hides the network error there). */
export function describe(err: unknown): string {
  const text = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0]!;
  const cause = err instanceof Error && err.cause !== undefined ? ` (${text(err.cause)})` : "";
  return `${text(err)}${cause}`.slice(0, 400);
}
