/**
 * CPU profiles of workerd's isolates through its inspector (the Chrome DevTools protocol on
 * Miniflare's `inspectorPort`): `--cpu-prof=DIR` on `npm run bench` records one `.cpuprofile`
 * per isolate and measured phase of the Sluice rows (open them in Chrome DevTools or VS Code),
 * and prints the functions with the most self time.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import WebSocket from "ws";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** V8's profile format (Profiler.stop), as DevTools reads it. */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** One DevTools-protocol connection to one isolate. */
class Session {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as { id?: number; result?: unknown; error?: { message: string } };
      const waiter = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id!);
      if (msg.error) waiter.reject(new Error(msg.error.message));
      else waiter.resolve(msg.result);
    });
    ws.on("close", () => {
      for (const w of this.pending.values()) w.reject(new Error("inspector connection closed"));
      this.pending.clear();
    });
  }

  static open(url: string): Promise<Session> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { maxPayload: 1 << 30 });
      ws.once("open", () => resolve(new Session(ws)));
      ws.once("error", reject);
    });
  }

  call<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

interface Target {
  id: string;
  webSocketDebuggerUrl: string;
}

/** Profiles every isolate of one workerd process while a phase runs. */
export class WorkerdProfiler {
  private sessions: { name: string; session: Session }[] = [];

  constructor(
    private readonly inspectorPort: number,
    /** Isolates to leave out (Miniflare's own plumbing that never runs our code). */
    private readonly skip: (targetId: string) => boolean = () => false,
  ) {}

  async start(samplingIntervalUs = 200): Promise<void> {
    const res = await fetch(`http://127.0.0.1:${this.inspectorPort}/json/list`);
    const targets = ((await res.json()) as Target[]).filter((t) => !this.skip(t.id));
    for (const t of targets) {
      const session = await Session.open(t.webSocketDebuggerUrl);
      await session.call("Profiler.enable");
      await session.call("Profiler.setSamplingInterval", { interval: samplingIntervalUs });
      await session.call("Profiler.start");
      this.sessions.push({ name: t.id, session });
    }
  }

  /** Stops every profile and writes `<dir>/<label>.<isolate>.cpuprofile`; returns the summaries. */
  async stop(dir: string, label: string): Promise<string> {
    const out: string[] = [];
    for (const { name, session } of this.sessions) {
      const { profile } = await session.call<{ profile: CpuProfile }>("Profiler.stop");
      session.close();
      const file = join(dir, `${label}.${name.replace(/[^A-Za-z0-9_-]+/g, "_")}.cpuprofile`);
      await writeFile(file, JSON.stringify(profile));
      out.push(summarize(profile, `${label} · isolate ${name} (${file})`));
    }
    this.sessions = [];
    return out.join("\n\n");
  }
}

/** Self time per function, the heaviest first, with the total time the isolate was busy. */
export function summarize(profile: CpuProfile, title: string, top = 25): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // A sample's time is the gap to the next sample (V8 stores gaps before each sample).
  for (let i = 0; i < samples.length; i++) {
    const dt = deltas[i + 1] ?? 0;
    selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + dt);
  }
  const byFunction = new Map<string, number>();
  let busy = 0;
  let total = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    total += us;
    if (frame.functionName === "(idle)" || frame.functionName === "(program)") continue;
    busy += us;
    const where = frame.url ? `${frame.url.split("/").pop()}:${frame.lineNumber + 1}` : "";
    const key = `${frame.functionName || "(anonymous)"} ${where}`.trim();
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
  }
  const lines = [
    `${title}`,
    `  sampled ${(total / 1000).toFixed(0)} ms, JavaScript or GC busy ${(busy / 1000).toFixed(0)} ms (${total > 0 ? ((100 * busy) / total).toFixed(1) : "0"}%)`,
  ];
  const sorted = [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [fn, us] of sorted) lines.push(`  ${(us / 1000).toFixed(1).padStart(8)} ms  ${((100 * us) / Math.max(1, busy)).toFixed(1).padStart(5)}%  ${fn}`);
  return lines.join("\n");
}
