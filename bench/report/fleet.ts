import { fleetFailures, streamCpuShare, type FleetResult, type Reading } from "../fleet/run.ts";
import type { TargetCheck } from "./analysis.ts";
import { DASH, mib, ms, num, table } from "./format.ts";

/** The sizes issue 7 asks the fleet to reach. */
const TARGET_AGENTS = 1_000;
const TARGET_STREAMS = 2_000;

/**
 * What one more idle agent connection costs the gateway: the rise from the reading with the
 * first agent alone (which carries the one-time costs) to the reading with all of them.
 */
export function bytesPerAgent(r: FleetResult, reading: "connected" | "idle"): number | undefined {
  const first = r.readings.first?.rssBytes;
  const all = r.readings[reading]?.rssBytes;
  const n = r.connected?.ready ?? 0;
  return first === undefined || all === undefined || n < 2 ? undefined : (all - first) / (n - 1);
}

const kib = (bytes: number | undefined): string => (bytes === undefined ? DASH : (bytes / 1024).toFixed(0));
const seconds = (v: number | undefined): string => (v === undefined || !Number.isFinite(v) ? DASH : (v / 1000).toFixed(1));

/** The scale line of the targets table. */
export function scaleTarget(r: FleetResult | undefined): TargetCheck {
  const target = `scale: ${TARGET_AGENTS.toLocaleString("en-US")} agents and ${TARGET_STREAMS.toLocaleString("en-US")} concurrent streams from a fleet simulator, without errors; memory per idle agent`;
  if (!r) return { target, measured: "not run (npm run bench -- --rows=fleet)", verdict: "n/a" };
  const s = r.streams;
  const size = `${r.connected?.ready ?? 0} agents, ${s ? `${s.peakConcurrent} streams at once, ${s.errors} of ${s.requests} failed` : "no streams"}`;
  const measured = `${size}; ${kib(bytesPerAgent(r, "idle"))} KiB per idle agent`;
  if (fleetFailures(r).length > 0) return { target, measured, verdict: "FAIL" };
  if (r.phase.agents < TARGET_AGENTS || r.phase.streams < TARGET_STREAMS) return { target, measured: `${measured} (smaller than the target in this profile)`, verdict: "n/a" };
  return { target, measured, verdict: "PASS" };
}

function readingCell(r: FleetResult, reading: Reading | undefined, perAgent?: "connected" | "idle"): string {
  if (!reading) return DASH;
  const b = perAgent ? bytesPerAgent(r, perAgent) : undefined;
  return `${mib(reading.rssBytes)} MiB${b === undefined ? "" : ` (+${kib(b)} KiB per agent after the first)`}, ${reading.sessions} in memory`;
}

/** The fleet run's own table. */
export function fleetTable(r: FleetResult): string {
  const p = r.phase;
  const s = r.streams;
  const f = r.fleet;
  const cpu = streamCpuShare(r);
  const rows = [
    ["agents connected (welcomed, instance in the router)", r.connected ? `${r.connected.ready} of ${p.agents}, in ${seconds(r.connected.connectMs)} s` : DASH],
    ["gateway RSS; MinerSession objects in memory: before any agent", readingCell(r, r.readings.before)],
    ["... with the first agent", readingCell(r, r.readings.first)],
    ["... with every agent, just connected", readingCell(r, r.readings.connected, "connected")],
    [`... idle, the reading (of one a second for ${p.idleMs / 1000} s) with the fewest in memory${r.readings.idle?.afterMs === undefined ? "" : `, ${(r.readings.idle.afterMs / 1000).toFixed(0)} s in`}`, readingCell(r, r.readings.idle, "idle")],
    ["streams opened / ok / open at the same moment", s ? `${s.requests} / ${s.ok} / ${s.peakConcurrent}` : DASH],
    ["leases the router held at once (sampled every 2 s)", r.router?.peakInflight === undefined ? DASH : String(r.router.peakInflight)],
    ["TTFT p50 / p99, ms", s ? `${ms(s.ttftP50)} / ${ms(s.ttftP99)}` : DASH],
    ["stream duration p50 / p99, s", s ? `${seconds(s.latencyP50)} / ${seconds(s.latencyP99)}` : DASH],
    ["tokens/s delivered; chunk frames/s from the agents", s ? `${num(s.tokensPerSec)}; ${f ? num((f.chunkFrames * 1000) / s.wallMs) : DASH}` : DASH],
    ["gateway CPU while streaming, cores busy (of 2)", cpu === undefined ? DASH : cpu.toFixed(2)],
    ["gateway peak RSS, MiB", mib(r.peakRssBytes)],
    ["fleet process peak RSS, MiB (not the gateway's)", mib(f?.peakRssBytes)],
    ["jobs on the agents: ok / cancelled / failed; refused", f ? `${f.jobs.ok} / ${f.jobs.cancelled} / ${f.jobs.error}; ${f.refused}` : DASH],
  ];
  return table(["fleet simulator", "measured"], rows, ["left", "right"]);
}

/** How the fleet run loads the gateway, for the report's preamble. */
export function fleetLoadText(p: FleetResult["phase"]): string {
  const streamSeconds = (p.maxTokens * p.tokenIntervalMs) / 1000;
  return `fleet = one Node process hosting ${p.agents} light agents (the real agent's connection and job runner around a synthetic engine; ${p.slotsPerAgent} slots each), connected ${p.connectConcurrency} at a time; then ${p.streams} streaming requests ${p.openPerSec > 0 ? `opened ${p.openPerSec} a second` : "opened at once"}, ${p.maxTokens} tokens each, one token per ${p.tokenIntervalMs} ms handed over in bursts every ${p.frameMs} ms (one chunk frame each; about ${streamSeconds.toFixed(0)} s per stream)`;
}
