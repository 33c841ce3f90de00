import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { makeSeed, type Seed, type SeedChute } from "../../scripts/lib/seed.ts";
import { ROOT } from "../../test/support/paths.ts";
import { WorkerdProfiler } from "../cpu-profile.ts";
import { HttpLoadClient } from "../load/http-client.ts";
import { PeakRss, statusBytes, totalCpuMs } from "../proc.ts";
import type { FleetPhase } from "../profile.ts";
import { ManagedChild } from "../targets/child.ts";
import { startBenchGateway, waitForInstances, type BenchGateway } from "../targets/gateway.ts";
import { freePort } from "../targets/net.ts";
import { FleetReport, ReadyLine, type FleetConfig } from "./contract.ts";
import { describe, residentObjects, RouterSampler } from "./probes.ts";
import { openStreams, type StreamsResult } from "./streams.ts";

const FLEET_PROCESS = fileURLToPath(new URL("./fleet-process.ts", import.meta.url));
/** Far more than any run spends. */
const CREDIT_USD = 100_000;
/** After the last agent's instance reached the router, before the "connected" reading. */
const SETTLE_MS = 2_000;
const ROUTER_SAMPLE_MS = 2_000;
const IDLE_SAMPLE_MS = 1_000;

/** One reading of the gateway: workerd's resident memory, and the agents' Durable Objects in memory. */
export interface Reading {
  rssBytes: number;
  /** MinerSession objects resident (not evicted). */
  sessions: number;
  /** For the idle reading: how long after the "connected" one it was taken. */
  afterMs?: number;
}

export interface FleetResult {
  phase: FleetPhase;
  status: "ok" | "failed";
  /** Why the run stopped early. */
  reason?: string;
  connected?: ReadyLine;
  /**
   * Before any agent; with the first agent alone (its costs are partly one-time ones: the first
   * Durable Objects, their code); with all of them just connected; and, of the readings taken
   * every second while they sat idle, the one with the fewest sessions in memory.
   */
  readings: { before?: Reading; first?: Reading; connected?: Reading; idle?: Reading };
  /** workerd's peak resident memory over the whole run. */
  peakRssBytes?: number;
  streams?: StreamsResult;
  /** workerd's CPU time (all threads) while the streams ran. */
  streamCpuMs?: number;
  /** The chute router's own view during the streams: leases held at once (sampled), and refusals. */
  router?: { peakInflight?: number; refused: number };
  /** The fleet process's account of itself. */
  fleet?: FleetReport;
  notes: string[];
}

export interface FleetOptions {
  log: (line: string) => void;
  /** Profile the gateway's isolates during the streams (`--cpu-prof=DIR`). */
  cpuProfDir?: string;
}

/** The chute the fleet serves: each agent's instance takes `slotsPerAgent` concurrent jobs. */
function fleetChute(p: FleetPhase): SeedChute {
  return {
    id: "chute-bench-fleet",
    name: "bench/fleet",
    modelRef: "synthetic",
    engine: "openai-upstream",
    contextLength: 8192,
    maxOutputTokens: Math.max(1024, p.maxTokens),
    promptPriceNanoPerM: 100_000_000,
    completionPriceNanoPerM: 400_000_000,
    concurrency: p.slotsPerAgent,
    maxInstances: p.agents,
  };
}

/** Everything that says the run did not do what it claims: empty for a clean run. */
export function fleetFailures(r: FleetResult): string[] {
  const p = r.phase;
  const out: string[] = [];
  if (r.status === "failed") out.push(`stopped early: ${r.reason}`);
  if (r.connected && r.connected.ready < p.agents) out.push(`${r.connected.ready} of ${p.agents} agents connected`);
  const f = r.fleet;
  if (f) {
    if (f.lost > 0) out.push(`${f.lost} agent connections lost`);
    if (f.welcomes > f.agents) out.push(`${f.welcomes - f.agents} reconnections`);
    if (f.jobs.error > 0) out.push(`${f.jobs.error} jobs failed on the agents`);
    if (f.refused > 0) out.push(`${f.refused} jobs refused by full agents`);
    for (const pr of f.problems) out.push(`agents logged ${pr.level} ${pr.event} (${pr.detail}) x${pr.count}`);
  } else if (r.status === "ok") {
    out.push("no report from the fleet process");
  }
  const s = r.streams;
  if (s) {
    if (s.errors > 0) {
      const after = s.failedAfterMs ? ` after ${(s.failedAfterMs.min / 1000).toFixed(1)}-${(s.failedAfterMs.max / 1000).toFixed(1)} s` : "";
      out.push(`${s.errors} of ${s.requests} streams failed${after}, e.g. ${s.errorExamples.join(" / ")}`);
    }
    if (s.peakConcurrent < p.streams) out.push(`only ${s.peakConcurrent} of ${p.streams} streams were open at once`);
  }
  if (r.router && r.router.refused > 0) out.push(`the router refused ${r.router.refused} requests`);
  return out;
}

/**
 * The scale run (issue 7): a Sluice gateway as the bench runs it, `agents` light agents from
 * one fleet process connected to it, readings before they connect, with the first one, once
 * they are all in the router, and after they sat idle long enough for their Durable Objects to
 * hibernate; then `streams` streaming requests, all open together at some point, each one
 * checked. Bounded in time; the fleet and the gateway are stopped whatever happens.
 */
export async function runFleet(p: FleetPhase, opts: FleetOptions): Promise<FleetResult> {
  const { log } = opts;
  const result: FleetResult = { phase: p, status: "ok", readings: {}, notes: [] };
  const chute = fleetChute(p);
  const names = Array.from({ length: p.agents }, (_, i) => `fleet-${String(i).padStart(4, "0")}`);
  const seed = makeSeed({ chutes: [chute], minerNames: names, creditUsd: CREDIT_USD });
  let gateway: BenchGateway | undefined;
  let fleet: ManagedChild | undefined;
  let peak: PeakRss | undefined;
  const reportPath = (gw: BenchGateway) => join(gw.dir, "fleet-report.json");
  try {
    const inspectorPort = opts.cpuProfDir ? await freePort() : undefined;
    gateway = await startBenchGateway({ seed, ...(inspectorPort ? { inspectorPort } : {}) });
    const gw = gateway;
    const read = (): Reading => ({
      rssBytes: gw.workerd.reduce((n, pid) => n + statusBytes(pid, "VmRSS"), 0),
      sessions: residentObjects(gw.workerd, gw.dir, "MinerSession"),
    });
    const headers = { authorization: `Bearer ${seed.apiKey}` };
    // One request first, so the baseline includes the Worker's isolate as it serves, not as it boots.
    const warm = await fetch(`${gw.url}/v1/models`, { headers, signal: AbortSignal.timeout(10_000) });
    await warm.arrayBuffer();
    if (warm.status !== 200) throw new Error(`GET /v1/models answered ${warm.status}`);
    result.readings.before = read();
    peak = new PeakRss(() => gw.workerd);

    fleet = await startFleet(gw, seed, chute, p, reportPath(gw));
    const f = fleet;
    // waitFor() also matches lines printed before it is called: each step names only its own outcomes.
    const step = async (pattern: RegExp): Promise<ReadyLine> => {
      const m = await f.waitFor(pattern, p.connectTimeoutMs + 30_000);
      const line = ReadyLine.parse(JSON.parse(m[2]!));
      result.connected = line;
      if (m[1] === "FAILED") throw new Error(`${line.ready} of ${p.agents} agents were welcomed within ${p.connectTimeoutMs} ms`);
      return line;
    };
    log(`fleet: connecting ${p.agents} agents (${p.connectConcurrency} at a time) ...`);
    const first = await step(/FLEET_(FIRST|FAILED) (\{.*\})/);
    await waitForInstances(gw, seed.apiKey, chute.id, 1, 30_000);
    await sleep(SETTLE_MS);
    result.readings.first = read();
    f.kill("SIGUSR2");
    const rest = await step(/FLEET_(READY|FAILED) (\{.*\})/);
    result.connected = { ...rest, connectMs: first.connectMs + rest.connectMs };
    await waitForInstances(gw, seed.apiKey, chute.id, p.agents, 30_000);
    log(`fleet: ${p.agents} agents connected in ${(result.connected.connectMs / 1000).toFixed(1)} s; idle for ${((SETTLE_MS + p.idleMs) / 1000).toFixed(0)} s ...`);
    await sleep(SETTLE_MS);
    const connectedAt = performance.now();
    result.readings.connected = read();
    result.readings.idle = await quietest(read, connectedAt, p.idleMs);

    log(`fleet: ${p.streams} streams of ${p.maxTokens} tokens, ${p.openPerSec > 0 ? `${p.openPerSec} opened a second` : "opened at once"} ...`);
    const client = new HttpLoadClient({ baseURL: `${gw.url}/v1`, headers, model: chute.name }, p.streams, p.streamTimeoutMs);
    const sampler = new RouterSampler(gw, seed.apiKey, chute.id, ROUTER_SAMPLE_MS);
    const profiler = inspectorPort ? new WorkerdProfiler(inspectorPort, (id) => !id.startsWith("core:user") && !id.startsWith("d1:")) : undefined;
    await profiler?.start();
    const cpuBefore = totalCpuMs(gw.workerd);
    try {
      result.streams = await openStreams(client, p.streams, p.maxTokens, p.openPerSec, p.streamTimeoutMs);
      result.streamCpuMs = totalCpuMs(gw.workerd) - cpuBefore;
    } finally {
      client.close();
      sampler.stop();
      if (profiler && opts.cpuProfDir) log(`CPU profile of the gateway during the fleet's streams:\n${await profiler.stop(opts.cpuProfDir, "fleet.streams")}`);
    }
    const after = await sampler.read();
    result.router = { ...(sampler.samples > 0 ? { peakInflight: sampler.peakInflight } : {}), refused: after.stats.refused };
    if (sampler.error) result.notes.push(`reading the router during the streams failed: ${sampler.error}`);
    const s = result.streams;
    log(`fleet: ${s.ok} of ${s.requests} streams ok, ${s.peakConcurrent} open at once, TTFT p50 ${s.ttftP50.toFixed(0)} ms, p99 ${s.ttftP99.toFixed(0)} ms`);
  } catch (err) {
    result.status = "failed";
    result.reason = describe(err);
    log(`fleet: failed: ${result.reason}`);
  } finally {
    if (peak) result.peakRssBytes = peak.stop();
    if (fleet && gateway) {
      await fleet.stop(10_000);
      result.fleet = await readReport(reportPath(gateway), fleet, result.notes);
    }
    for (const line of gateway?.unusualLines() ?? []) result.notes.push(`gateway (workerd) printed: ${line}`);
    await gateway?.close().catch((err: unknown) => result.notes.push(`stopping the gateway failed: ${describe(err)}`));
  }
  return result;
}

/**
 * The idle reading with the fewest sessions in memory (the latest of equals). Idle sessions
 * are evicted some 10-20 s after their last event, but each one's stale-agent alarm wakes it
 * again 35 s after it last heard its agent, so a fleet that took a while to connect is never
 * all asleep at one moment: a single reading at a fixed time would say little.
 */
async function quietest(read: () => Reading, since: number, forMs: number): Promise<Reading> {
  let best: Reading | undefined;
  do {
    await sleep(Math.min(IDLE_SAMPLE_MS, forMs));
    const r = { ...read(), afterMs: Math.round(performance.now() - since) };
    if (!best || r.sessions <= best.sessions) best = r;
  } while (performance.now() - since < forMs);
  return best;
}

/** The fleet process, given every miner's hotkey in a config file only it and we read. */
async function startFleet(gw: BenchGateway, seed: Seed, chute: SeedChute, p: FleetPhase, reportPath: string): Promise<ManagedChild> {
  const configPath = join(gw.dir, "fleet.json");
  const config: FleetConfig = {
    gateway: gw.url,
    chute: chute.name,
    slots: p.slotsPerAgent,
    pacing: { tokenIntervalMs: p.tokenIntervalMs, frameMs: p.frameMs },
    connectConcurrency: p.connectConcurrency,
    connectTimeoutMs: p.connectTimeoutMs,
    miners: seed.miners.map((m) => ({ name: m.name, secretSeed: m.secretSeed })),
    reportPath,
  };
  await writeFile(configPath, JSON.stringify(config), { mode: 0o600 });
  return new ManagedChild("fleet simulator", process.execPath, ["--import", "tsx", FLEET_PROCESS, configPath], { cwd: ROOT });
}

async function readReport(path: string, fleet: ManagedChild, notes: string[]): Promise<FleetReport | undefined> {
  try {
    return FleetReport.parse(JSON.parse(await readFile(path, "utf8")));
  } catch (err) {
    notes.push(`no report from the fleet process (${describe(err)}); its last output: ${fleet.lastOutput(600)}`);
    return undefined;
  }
}

/** Seconds of workerd CPU per second of wall time while the streams ran (2 = both cores busy). */
export function streamCpuShare(r: FleetResult): number | undefined {
  return r.streamCpuMs === undefined || !r.streams ? undefined : r.streamCpuMs / r.streams.wallMs;
}
