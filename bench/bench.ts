import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import type { LlamaCppEngineConfig } from "../miner-agent/engines/types.ts";
import { ROOT, TINY_MODEL } from "../test/support/paths.ts";
import { TINY_CHUTE } from "../scripts/lib/seed.ts";
import type { ChatBody } from "./load/http-client.ts";
import { combineLoads, runLoad, type LoadResult } from "./load/runner.ts";
import { sliceOf, turnOrder } from "./load/turns.ts";
import { machine, packageVersion, type Machine } from "./machine.ts";
import { isolateEngineHost, PeakRss, totalCpuMs } from "./proc.ts";
import { runFleet, type FleetResult } from "./fleet/run.ts";
import { LLAMA_PARALLEL, PACED_TOKEN_MS, TURNS, type Phase, type Profile } from "./profile.ts";
import { startLlamaInProcess } from "./targets/llama.ts";
import { ensureNginx, startNginx } from "./targets/nginx.ts";
import { portkeyPackage, startPortkey } from "./targets/portkey.ts";
import { PACED_CHUTE, startSluice, syntheticEngine, SYNTHETIC_CHUTE } from "./targets/sluice.ts";
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
const LLAMA_ROWS: readonly RowId[] = ["llama", "sluice-llama"];
/** The rows of the paced phase (Portkey's streaming fails, so it is left out). */
export const PACED_ROWS: readonly RowId[] = ["direct", "nginx", "sluice"];

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
  /** The streams from the paced upstream (PACED_ROWS only). */
  paced?: PhaseResult;
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

type Connect = RunningTarget["client"];

async function phase(target: RunningTarget, p: Phase, stream: boolean, timeoutMs: number, profiling?: Profiling, connect: Connect = target.client.bind(target)): Promise<PhaseResult> {
  const client = connect(p.concurrency, timeoutMs);
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

type PhaseKind = "small" | "stream" | "lone" | "paced";

/** How a row is called in a phase: in the paced phase through its pacedClient, if it has one (else it sits the phase out). */
function connector(target: RunningTarget, kind: PhaseKind): Connect | undefined {
  return kind === "paced" ? target.pacedClient?.bind(target) : target.client.bind(target);
}

interface Entrant {
  row: RowResult;
  target: RunningTarget;
  peak: PeakRss;
  slices: Partial<Record<PhaseKind, PhaseResult[]>>;
}

/**
 * Rows that are compared are measured in turns, all of their targets up at once: each phase is
 * cut into slices per row, run in order and then in reverse, and again (A B C D, D C B A, ...),
 * and each row's slices count as one load. This machine's speed drifts by tens of percent over
 * minutes; measured one row after another, that drift decided the comparisons between rows. In
 * turns, it touches every row alike. The synthetic rows are one group, the two llama.cpp rows
 * another, each with its own number of slices (TURNS).
 */
async function measureInTurns(
  group: readonly RowResult[],
  phases: readonly (readonly [PhaseKind, Phase, boolean])[],
  upstreams: Upstreams,
  opts: BenchOptions,
  runtime: Runtime,
  engineRows: boolean,
): Promise<void> {
  const { log, profile } = opts;
  const turns = engineRows ? TURNS.llama : TURNS.synthetic;
  const entrants: Entrant[] = [];
  try {
    for (const row of group) {
      log(`starting ${row.label} ...`);
      try {
        const target = await startRow(row.id, upstreams, opts, runtime, row);
        if (!target) {
          log(`  skipped: ${row.reason}`);
          continue;
        }
        entrants.push({ row, target, peak: new PeakRss(() => target.gatewayPids()), slices: {} });
      } catch (err) {
        fail(row, err, log);
      }
    }
    // The llama.cpp rows: every engine host (one is loaded at a time) gets the same CPU of its
    // own (the agent; the baseline's own process); the gateway and the load generator keep off it.
    const isolated = engineRows
      ? isolateEngineHost(entrants.flatMap((e) => e.target.agentPids?.() ?? []), [...entrants.flatMap((e) => e.target.gatewayPids()), process.pid])
      : null;
    if (engineRows) for (const e of entrants) e.row.notes.push(isolated?.note ?? "engine host not pinned to a CPU of its own (one CPU, or no taskset)");
    try {
      for (const [kind, p, stream] of phases) {
        const taking = entrants.filter((e) => connector(e.target, kind));
        if (taking.length === 0) continue;
        log(`${kind}: ${taking.map((e) => e.row.label).join(", ")}, in turns ...`);
        for (let turn = 0; turn < turns; turn++) {
          for (const e of turnOrder(turn, taking)) {
            if (e.row.status === "failed") continue;
            const done = (e.slices[kind] ??= []);
            // Each row warms up before its first slice of the phase only.
            const slice: Phase = { ...sliceOf(p, turns), warmupMs: done.length === 0 ? p.warmupMs : 0 };
            const profiling = opts.cpuProfDir && done.length === 0 && (kind === "small" || kind === "stream") ? { dir: opts.cpuProfDir, label: `${e.row.id}.${kind}`, log } : undefined;
            try {
              done.push(await phase(e.target, slice, stream, profile.requestTimeoutMs, profiling, connector(e.target, kind)));
            } catch (err) {
              fail(e.row, err, log);
            }
          }
        }
        for (const e of entrants) {
          const slices = e.slices[kind];
          if (e.row.status !== "failed" && slices) e.row[kind] = combinePhases(slices);
        }
      }
    } finally {
      isolated?.undo();
    }
    for (const { row } of entrants) {
      const paced = row.paced ? `, paced TTFT p50 ${row.paced.ttftP50.toFixed(2)} ms (${row.paced.errors} errors)` : "";
      if (row.status === "ok") log(`  ${row.label}: small ${row.small!.rps.toFixed(0)} req/s (${row.small!.errors} errors), stream ${row.stream!.tokensPerSec.toFixed(0)} tok/s (${row.stream!.errors} errors)${paced}`);
    }
  } finally {
    for (const { row, target, peak } of entrants) {
      const bytes = peak.stop();
      if (target.gatewayPids().length > 0) row.gatewayRssBytes = bytes;
      row.notes.push(...target.notes());
      await target.close().catch((err: unknown) => log(`  stopping ${row.label} failed: ${describe(err)}`));
    }
  }
}

function fail(row: RowResult, err: unknown, log: (line: string) => void): void {
  row.status = "failed";
  row.reason = describe(err);
  log(`  ${row.label} failed: ${row.reason}`);
}

/** Slices of one phase as one: the load combined, CPU per request averaged over all requests. */
function combinePhases(slices: readonly PhaseResult[]): PhaseResult {
  const load = combineLoads(slices);
  const perRequest = (f: (p: PhaseResult) => number | undefined): number | undefined => {
    if (slices.some((p) => f(p) === undefined) || load.requests === 0) return undefined;
    return slices.reduce((n, p) => n + f(p)! * p.requests, 0) / load.requests;
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

/** Starts what each group of rows needs, loads its rows in turns, stops it; on 127.0.0.1 only. */
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

  const upstreams: Upstreams = {};
  const rows: RowResult[] = [];
  try {
    if (wanted.some((r) => SYNTHETIC_ROWS.includes(r.id))) {
      upstreams.instant = await startUpstream();
      log(`synthetic upstream at ${upstreams.instant.url}`);
      await warmUp(upstreams.instant.direct, profile, log);
    }
    if (wanted.some((r) => PACED_ROWS.includes(r.id))) {
      upstreams.paced = await startUpstream({ delayPerTokenMs: PACED_TOKEN_MS });
      log(`paced synthetic upstream (${PACED_TOKEN_MS} ms per token) at ${upstreams.paced.url}`);
    }
    for (const group of [SYNTHETIC_ROWS, LLAMA_ROWS]) {
      const rowsOf = wanted.filter((r) => group.includes(r.id)).map(({ id, label }): RowResult => ({ id, label, status: "ok", notes: [] }));
      if (rowsOf.length === 0) continue;
      rows.push(...rowsOf);
      const engineRows = group === LLAMA_ROWS;
      const phases = engineRows
        ? ([["small", profile.llamaSmall, false], ["stream", profile.llamaStream, true]] as const)
        : ([["small", profile.small, false], ["stream", profile.stream, true], ["lone", profile.lone, true], ["paced", profile.paced, true]] as const);
      await measureInTurns(rowsOf, phases, upstreams, opts, runtime, engineRows);
    }
  } finally {
    await Promise.all([upstreams.instant?.close(), upstreams.paced?.close()]);
  }
  const fleet = opts.fleet ? await runFleet(profile.fleet, { log, ...(opts.cpuProfDir ? { cpuProfDir: opts.cpuProfDir } : {}) }) : undefined;
  return { startedAt, finishedAt: new Date(), machine: info, loadAtEnd: loadavg()[0]!, runtime, profile, rows, ...(fleet ? { fleet } : {}) };
}

/** The synthetic upstreams: with no delays, and pacing its tokens (the paced phase). */
interface Upstreams {
  instant?: Upstream;
  paced?: Upstream;
}

/** The direct row: the upstream called directly, and the paced upstream for the paced phase. */
function directRow({ instant, paced }: Upstreams): RunningTarget {
  return paced ? { ...instant!.direct, pacedClient: paced.direct.client.bind(paced.direct) } : instant!.direct;
}

async function startRow(id: RowId, upstreams: Upstreams, opts: BenchOptions, runtime: Runtime, row: RowResult): Promise<RunningTarget | undefined> {
  const upstream = upstreams.instant;
  const paced = upstreams.paced;
  switch (id) {
    case "direct":
      return directRow(upstreams);
    case "nginx": {
      const nginx = ensureNginx(opts.installNginx, opts.log);
      if (!nginx.ok) {
        row.status = "skipped";
        row.reason = nginx.reason;
        return undefined;
      }
      runtime.nginx = `nginx ${nginx.version} (${nginx.path}), 1 worker process, proxy_buffering off, upstream keepalive`;
      return startNginx(nginx.path, upstream!.port, paced?.port);
    }
    case "portkey":
      return startPortkey(upstream!.url);
    case "sluice":
      return startSluice({
        chute: SYNTHETIC_CHUTE,
        engine: syntheticEngine(upstream!.url),
        ...(paced ? { paced: { chute: PACED_CHUTE, engine: syntheticEngine(paced.url) } } : {}),
        creditUsd: CREDIT_USD,
        cpuProfDir: opts.cpuProfDir,
      });
    case "llama":
      return startLlamaInProcess(LLAMA_ENGINE);
    case "sluice-llama":
      return startSluice({ chute: TINY_CHUTE, engine: LLAMA_ENGINE, creditUsd: CREDIT_USD, cpuProfDir: opts.cpuProfDir });
  }
}
