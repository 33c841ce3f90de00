import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import type { LlamaCppEngineConfig } from "../miner-agent/engines/types.ts";
import { ROOT, TINY_MODEL } from "../test/support/paths.ts";
import { TINY_CHUTE } from "../scripts/lib/seed.ts";
import type { ChatBody } from "./load/http-client.ts";
import { combineLoads, runLoad, type LoadResult } from "./load/runner.ts";
import { machine, packageVersion, type Machine } from "./machine.ts";
import { isolateEngineHost, PeakRss, totalCpuMs } from "./proc.ts";
import { runFleet, type FleetResult } from "./fleet/run.ts";
import { LLAMA_PARALLEL, type Phase, type Profile } from "./profile.ts";
import { startLlamaInProcess } from "./targets/llama.ts";
import { ensureNginx, startNginx } from "./targets/nginx.ts";
import { portkeyPackage, startPortkey } from "./targets/portkey.ts";
import { startSluice, SYNTHETIC_CHUTE } from "./targets/sluice.ts";
import type { RunningTarget } from "./targets/types.ts";
import { startUpstream, type Upstream } from "./targets/upstream.ts";

export const ROWS = [
  { id: "direct", label: "direct floor (synthetic upstream)" },
  { id: "nginx", label: "nginx reverse proxy" },
  { id: "portkey", label: "Portkey gateway" },
  { id: "sluice", label: "Sluice full path (openai-upstream)" },
  { id: "llama", label: "llama.cpp in-process, no gateway" },
  { id: "sluice-llama", label: "Sluice + llama.cpp agent" },
] as const;
export type RowId = (typeof ROWS)[number]["id"];

const SYNTHETIC_ROWS: readonly RowId[] = ["direct", "nginx", "portkey", "sluice"];

/** One phase's load result, with the CPU its processes spent per request (from /proc). */
export interface PhaseResult extends LoadResult {
  gatewayCpuMsPerRequest?: number;
  agentCpuMsPerRequest?: number;
}

export interface RowResult {
  id: RowId;
  label: string;
  status: "ok" | "skipped" | "failed";
  /** Why the row was skipped or failed. */
  reason?: string;
  small?: PhaseResult;
  stream?: PhaseResult;
  /** Streams one at a time (synthetic rows only). */
  lone?: PhaseResult;
  /** Peak resident memory of the gateway process(es); undefined for rows without a gateway. */
  gatewayRssBytes?: number;
  notes: string[];
}

export interface Runtime {
  sluice: string;
  nginx: string;
  portkey: string;
  llama: string;
}

export interface BenchRun {
  startedAt: Date;
  finishedAt: Date;
  machine: Machine;
  loadAtEnd: number;
  runtime: Runtime;
  profile: Profile;
  rows: RowResult[];
  /** The fleet simulator's scale run, when it was asked for. */
  fleet?: FleetResult;
}

export interface BenchOptions {
  profile: Profile;
  rows: readonly RowId[];
  /** Run the fleet simulator's scale run (bench/fleet) after the rows. */
  fleet: boolean;
  /** Install nginx with apt-get when it is missing. */
  installNginx: boolean;
  /** Build the Worker bundle and the tiny model first (the test suite's setup already has). */
  build?: boolean;
  /** Record CPU profiles of the Sluice rows' gateway (and agent) here (`--cpu-prof=DIR`). */
  cpuProfDir?: string;
  log: (line: string) => void;
}

/** The llama.cpp engine of row 5, the same config for the agent and for the in-process baseline. */
const LLAMA_ENGINE: LlamaCppEngineConfig = { kind: "llama-cpp", modelPath: TINY_MODEL, parallel: LLAMA_PARALLEL, contextSize: 2048, threads: 1 };

/** Credit for the benchmark account: far more than any run spends (a 256-token stream costs ~$0.0001). */
const CREDIT_USD = 100_000;

function build(log: (line: string) => void): void {
  log("building the Worker bundle (wrangler deploy --dry-run) and the tiny model ...");
  execFileSync(process.execPath, [`${ROOT}/scripts/build-worker.mjs`], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync(process.execPath, [`${ROOT}/scripts/make-tiny-model.mjs`], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
}

function compatibilityDate(): string {
  const text = readFileSync(`${ROOT}/wrangler.jsonc`, "utf8");
  return /"compatibility_date"\s*:\s*"([^"]+)"/.exec(text)?.[1] ?? "?";
}

interface Profiling {
  dir: string;
  label: string;
  log: (line: string) => void;
}

async function phase(target: RunningTarget, p: Phase, stream: boolean, timeoutMs: number, profiling?: Profiling): Promise<PhaseResult> {
  const client = target.client(p.concurrency, timeoutMs);
  const body = (i: number): ChatBody => ({ max_tokens: p.maxTokens, stream, seed: i, temperature: 0.7 });
  const send = (i: number) => (stream ? client.stream(body(i)) : client.complete(body(i)));
  try {
    if (p.warmupMs > 0) await runLoad({ concurrency: p.concurrency, durationMs: p.warmupMs, maxRequests: p.maxRequests }, send);
    const gateway = target.gatewayPids();
    const agent = target.agentPids?.() ?? [];
    const profiler = profiling ? target.profiler : undefined;
    await profiler?.start();
    const cpuBefore = [totalCpuMs(gateway), totalCpuMs(agent)] as const;
    const result = await runLoad(p, send);
    if (profiler && profiling) {
      const summary = await profiler.stop(profiling.dir, profiling.label);
      profiling.log(`CPU profile, ${result.requests} requests:\n${summary}`);
    }
    const perRequest = (before: number, pids: number[]) =>
      pids.length > 0 && result.requests > 0 ? (totalCpuMs(pids) - before) / result.requests : undefined;
    return {
      ...result,
      gatewayCpuMsPerRequest: perRequest(cpuBefore[0], gateway),
      agentCpuMsPerRequest: perRequest(cpuBefore[1], agent),
    };
  } finally {
    client.close();
  }
}

async function measure(row: RowResult, target: RunningTarget, small: Phase, stream: Phase, lone: Phase | undefined, profile: Profile, opts: BenchOptions): Promise<void> {
  const peak = new PeakRss(() => target.gatewayPids());
  const profiling = (kind: string): Profiling | undefined =>
    opts.cpuProfDir ? { dir: opts.cpuProfDir, label: `${row.id}.${kind}`, log: opts.log } : undefined;
  try {
    row.small = await phase(target, small, false, profile.requestTimeoutMs, profiling("small"));
    row.stream = await phase(target, stream, true, profile.requestTimeoutMs, profiling("stream"));
    if (lone) row.lone = await phase(target, lone, true, profile.requestTimeoutMs);
  } finally {
    const bytes = peak.stop();
    if (target.gatewayPids().length > 0) row.gatewayRssBytes = bytes;
    row.notes.push(...target.notes());
  }
}

/**
 * The two llama.cpp rows are measured in turns, both engines up at once: each phase is cut in
 * LLAMA_TURNS slices per row, run A B B A, and each row's slices are counted as one load. This
 * machine's speed drifts by tens of percent over minutes; measured one after the other, that
 * drift decided the comparison between the two rows. In turns, it touches both alike.
 */
const LLAMA_TURNS = 2;

async function measureLlamaPair(rows: readonly [RowResult, RowResult], profile: Profile, opts: BenchOptions, runtime: Runtime): Promise<void> {
  const targets: RunningTarget[] = [];
  const peaks: PeakRss[] = [];
  try {
    for (const row of rows) {
      const target = await startRow(row.id, undefined, opts, runtime, row);
      if (!target) throw new Error(`${row.label} did not start`);
      targets.push(target);
      peaks.push(new PeakRss(() => target.gatewayPids()));
    }
    // Both engine hosts share one CPU of their own (one is loaded at a time); the gateway and
    // the load generator keep off it.
    const isolated = isolateEngineHost(targets.flatMap((t) => t.agentPids?.() ?? []), [...targets.flatMap((t) => t.gatewayPids()), process.pid]);
    for (const row of rows) row.notes.push(isolated?.note ?? "engine host not pinned to a CPU of its own (one CPU, or no taskset)");
    try {
      for (const [kind, p, stream] of [["small", profile.llamaSmall, false], ["stream", profile.llamaStream, true]] as const) {
        const parts: PhaseResult[][] = rows.map(() => []);
        for (let turn = 0; turn < 2 * LLAMA_TURNS; turn++) {
          // A B, then B A: a drift that is steady over the phase evens out.
          const i = turn % 4 === 0 || turn % 4 === 3 ? 0 : 1;
          const slice: Phase = {
            ...p,
            durationMs: p.durationMs / LLAMA_TURNS,
            maxRequests: Math.ceil(p.maxRequests / LLAMA_TURNS),
            // Each row warms up before its first slice only.
            warmupMs: parts[i]!.length === 0 ? p.warmupMs : 0,
          };
          const first = parts[i]!.length === 0;
          const profiling = opts.cpuProfDir && first ? { dir: opts.cpuProfDir, label: `${rows[i]!.id}.${kind}`, log: opts.log } : undefined;
          parts[i]!.push(await phase(targets[i]!, slice, stream, profile.requestTimeoutMs, profiling));
        }
        rows.forEach((row, i) => {
          row[kind] = combinePhases(parts[i]!);
        });
      }
    } finally {
      isolated?.undo();
    }
  } finally {
    targets.forEach((target, i) => {
      const bytes = peaks[i]!.stop();
      if (target.gatewayPids().length > 0) rows[i]!.gatewayRssBytes = bytes;
      rows[i]!.notes.push(...target.notes());
    });
    for (const target of targets) await target.close().catch((err: unknown) => opts.log(`  stopping it failed: ${describe(err)}`));
  }
}

/** Slices of one phase as one: the load combined, CPU per request averaged over all requests. */
function combinePhases(parts: readonly PhaseResult[]): PhaseResult {
  const load = combineLoads(parts);
  const perRequest = (f: (p: PhaseResult) => number | undefined): number | undefined => {
    if (parts.some((p) => f(p) === undefined) || load.requests === 0) return undefined;
    return parts.reduce((n, p) => n + f(p)! * p.requests, 0) / load.requests;
  };
  return { ...load, gatewayCpuMsPerRequest: perRequest((p) => p.gatewayCpuMsPerRequest), agentCpuMsPerRequest: perRequest((p) => p.agentCpuMsPerRequest) };
}

/** Unrecorded load on the upstream alone, so the first row does not pay for anyone's JIT warm-up. */
async function warmUp(direct: RunningTarget, profile: Profile, log: (line: string) => void): Promise<void> {
  if (profile.globalWarmupMs <= 0) return;
  log(`warming up the load generator and the upstream (${(2 * profile.globalWarmupMs) / 1000} s, not recorded) ...`);
  const warm = (p: Phase): Phase => ({ ...p, durationMs: profile.globalWarmupMs, warmupMs: 0 });
  await phase(direct, warm(profile.small), false, profile.requestTimeoutMs);
  await phase(direct, warm(profile.stream), true, profile.requestTimeoutMs);
}

function describe(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split("\n")[0]!.slice(0, 400);
}

/** Starts what each row needs, loads it, stops it; one row at a time, on 127.0.0.1 only. */
export async function runBench(opts: BenchOptions): Promise<BenchRun> {
  const { profile, log } = opts;
  const startedAt = new Date();
  const info = machine();
  const wanted = ROWS.filter((r) => opts.rows.includes(r.id));
  const runtime: Runtime = {
    sluice: `Miniflare ${packageVersion("miniflare")} running workerd ${packageVersion("workerd")} directly (not wrangler dev), the Worker on its own socket (Miniflare's dev entry Worker bypassed, as production has none), compatibility date ${compatibilityDate()}, Worker bundled by wrangler ${packageVersion("wrangler")} (deploy --dry-run); D1 and Durable Object storage on disk as in the tests; per-key rate limits on but set far above the load`,
    nginx: "not used",
    portkey: `@portkey-ai/gateway ${portkeyPackage().version} (its Node server, one process, NODE_ENV=production)`,
    llama: `node-llama-cpp ${packageVersion("node-llama-cpp")}, tiny generated GGUF, ${LLAMA_PARALLEL} parallel sequences, 1 thread, CPU`,
  };
  if (opts.build !== false && (opts.fleet || wanted.some((r) => r.id === "sluice" || r.id === "sluice-llama" || r.id === "llama"))) build(log);

  let upstream: Upstream | undefined;
  const rows: RowResult[] = [];
  try {
    if (wanted.some((r) => SYNTHETIC_ROWS.includes(r.id))) {
      upstream = await startUpstream();
      log(`synthetic upstream at ${upstream.url}`);
      await warmUp(upstream.direct, profile, log);
    }
    const inTurns = wanted.some((r) => r.id === "llama") && wanted.some((r) => r.id === "sluice-llama");
    for (const { id, label } of wanted) {
      if (inTurns && id === "sluice-llama") continue; // measured with "llama"
      const row: RowResult = { id, label, status: "ok", notes: [] };
      rows.push(row);
      if (inTurns && id === "llama") {
        const other = ROWS.find((r) => r.id === "sluice-llama")!;
        const gw: RowResult = { id: other.id, label: other.label, status: "ok", notes: [] };
        rows.push(gw);
        log(`rows ${rows.length - 1} and ${rows.length}: ${label} and ${other.label}, in turns ...`);
        try {
          await measureLlamaPair([row, gw], profile, opts, runtime);
          for (const r of [row, gw]) log(`  ${r.label}: small ${r.small!.rps.toFixed(0)} req/s (${r.small!.errors} errors), stream ${r.stream!.tokensPerSec.toFixed(0)} tok/s (${r.stream!.errors} errors)`);
        } catch (err) {
          for (const r of [row, gw]) {
            r.status = "failed";
            r.reason = describe(err);
          }
          log(`  failed: ${row.reason}`);
        }
        continue;
      }
      log(`row ${rows.length}: ${label} ...`);
      let target: RunningTarget | undefined;
      try {
        target = await startRow(id, upstream, opts, runtime, row);
        if (!target) {
          log(`  skipped: ${row.reason}`);
          continue;
        }
        const llamaRow = id === "llama" || id === "sluice-llama";
        // Both llama.cpp rows give their engine host (the agent; the baseline's own process) the
        // same CPU of its own, and keep the gateway and the load generator off it.
        const isolated = llamaRow ? isolateEngineHost(target.agentPids?.() ?? [], [...target.gatewayPids(), process.pid]) : null;
        if (llamaRow) row.notes.push(isolated?.note ?? "engine host not pinned to a CPU of its own (one CPU, or no taskset)");
        try {
          await measure(row, target, llamaRow ? profile.llamaSmall : profile.small, llamaRow ? profile.llamaStream : profile.stream, llamaRow ? undefined : profile.lone, profile, opts);
        } finally {
          isolated?.undo();
        }
        log(`  small ${row.small!.rps.toFixed(0)} req/s (${row.small!.errors} errors), stream ${row.stream!.tokensPerSec.toFixed(0)} tok/s (${row.stream!.errors} errors)`);
      } catch (err) {
        row.status = "failed";
        row.reason = describe(err);
        log(`  failed: ${row.reason}`);
      } finally {
        await target?.close().catch((err: unknown) => log(`  stopping it failed: ${describe(err)}`));
      }
    }
  } finally {
    await upstream?.close();
  }
  const fleet = opts.fleet ? await runFleet(profile.fleet, { log, ...(opts.cpuProfDir ? { cpuProfDir: opts.cpuProfDir } : {}) }) : undefined;
  return { startedAt, finishedAt: new Date(), machine: info, loadAtEnd: loadavg()[0]!, runtime, profile, rows, ...(fleet ? { fleet } : {}) };
}

async function startRow(id: RowId, upstream: Upstream | undefined, opts: BenchOptions, runtime: Runtime, row: RowResult): Promise<RunningTarget | undefined> {
  switch (id) {
    case "direct":
      return upstream!.direct;
    case "nginx": {
      const nginx = ensureNginx(opts.installNginx, opts.log);
      if (!nginx.ok) {
        row.status = "skipped";
        row.reason = nginx.reason;
        return undefined;
      }
      runtime.nginx = `nginx ${nginx.version} (${nginx.path}), 1 worker process, proxy_buffering off, upstream keepalive`;
      return startNginx(nginx.path, upstream!.port);
    }
    case "portkey":
      return startPortkey(upstream!.url);
    case "sluice":
      return startSluice({
        chute: SYNTHETIC_CHUTE,
        engine: { kind: "openai-upstream", baseURL: upstream!.url, model: "synthetic", parallel: SYNTHETIC_CHUTE.concurrency },
        creditUsd: CREDIT_USD,
        cpuProfDir: opts.cpuProfDir,
      });
    case "llama":
      return startLlamaInProcess(LLAMA_ENGINE);
    case "sluice-llama":
      return startSluice({ chute: TINY_CHUTE, engine: LLAMA_ENGINE, creditUsd: CREDIT_USD, cpuProfDir: opts.cpuProfDir });
  }
}
