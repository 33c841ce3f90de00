import type { BenchRun, RowResult } from "../bench.ts";
import type { LoadResult } from "../load/runner.ts";
import { PACED_TOKEN_MS, TURNS, type Phase } from "../profile.ts";
import { byId, checkTargets, div, smallP50, smallRps, streamE2eP50, streamTps, sub, ttftP50, usable } from "./analysis.ts";
import { fleetFailures } from "../fleet/run.ts";
import { fleetLoadText, fleetTable, scaleTarget } from "./fleet.ts";
import { DASH, deltaMs, mib, ms, num, percent, ratio, table } from "./format.ts";

const PEERS = ["direct", "nginx", "portkey", "sluice"] as const;
const SHORT: Record<RowResult["id"], string> = {
  direct: "direct",
  nginx: "nginx",
  portkey: "Portkey",
  sluice: "Sluice",
  llama: "llama in-process",
  "sluice-llama": "Sluice+llama",
};

function phaseText(p: Phase, what: string): string {
  const ramp = p.rampMs ? `, each slice of it after a ${p.rampMs / 1000} s ramp of spread-out starts, not recorded` : "";
  return `${what}, concurrency ${p.concurrency}, ${p.durationMs / 1000} s after a ${p.warmupMs / 1000} s warm-up (at most ${p.maxRequests.toLocaleString("en-US")} requests)${ramp}`;
}

function errorsCell(row: RowResult): string {
  const e = (r: RowResult["small"]) => (r ? `${r.errors}/${r.requests}` : DASH);
  return `${e(row.small)} · ${e(row.stream)}`;
}

function resultsTable(run: BenchRun): string {
  const rows = run.rows.map((row, i) => {
    const label = `${i + 1}. ${row.label}${row.status === "ok" ? "" : ` (${row.status})`}`;
    const small = usable(row.small);
    const stream = usable(row.stream);
    return [
      label,
      num(small?.rps), ms(small?.latencyP50), ms(small?.latencyP99),
      num(stream?.tokensPerSec), ms(stream?.ttftP50), ms(stream?.ttftP99), ms(stream?.latencyP50),
      errorsCell(row), mib(row.gatewayRssBytes),
    ];
  });
  return table(
    ["row", "small req/s", "p50 ms", "p99 ms", "stream tok/s", "TTFT p50 ms", "TTFT p99 ms", "stream p50 ms", "errors small · stream", "gateway peak RSS MiB"],
    rows,
  );
}

function cpuTable(run: BenchRun): string | undefined {
  const measured = (r: RowResult["small"]) => r?.gatewayCpuMsPerRequest !== undefined || r?.agentCpuMsPerRequest !== undefined;
  const rows = run.rows.filter((r) => measured(r.small) || measured(r.stream));
  if (rows.length === 0) return undefined;
  return table(
    ["CPU ms per request (user+sys, /proc)", "gateway, small", "gateway, per stream", "engine host, small", "engine host, per stream"],
    rows.map((r) => [
      SHORT[r.id],
      ms(r.small?.gatewayCpuMsPerRequest), ms(r.stream?.gatewayCpuMsPerRequest),
      ms(r.small?.agentCpuMsPerRequest), ms(r.stream?.agentCpuMsPerRequest),
    ]),
  );
}

function ratioMatrix(run: BenchRun, value: (r: RowResult | undefined) => number | undefined): string {
  const present = PEERS.filter((id) => byId(run.rows, id));
  const rows = present.map((id) => [SHORT[id], ...present.map((other) => ratio(div(value(byId(run.rows, id)), value(byId(run.rows, other)))))]);
  return table(["row ÷ column", ...present.map((id) => SHORT[id])], rows);
}

function addedLatency(run: BenchRun): string {
  const direct = byId(run.rows, "direct");
  const rows = PEERS.filter((id) => id !== "direct" && byId(run.rows, id)).map((id) => {
    const row = byId(run.rows, id);
    const small = usable(row?.small);
    const stream = usable(row?.stream);
    const lone = usable(row?.lone);
    const d = { small: usable(direct?.small), stream: usable(direct?.stream), lone: usable(direct?.lone) };
    return [
      SHORT[id],
      deltaMs(sub(small?.latencyP50, d.small?.latencyP50)), deltaMs(sub(small?.latencyP99, d.small?.latencyP99)),
      deltaMs(sub(stream?.ttftP50, d.stream?.ttftP50)), deltaMs(sub(stream?.ttftP99, d.stream?.ttftP99)),
      deltaMs(sub(lone?.ttftP50, d.lone?.ttftP50)),
      percent(div(streamTps(row), streamTps(direct))),
    ];
  });
  return table(["over the direct floor", "small p50 +ms", "small p99 +ms", "TTFT p50 +ms, saturated", "TTFT p99 +ms, saturated", "TTFT p50 +ms, one stream", "stream tok/s kept"], rows);
}

/** The paced phase: each row's time to first token, and what it adds over the paced upstream called directly. */
function pacedTable(run: BenchRun): string | undefined {
  const direct = usable(byId(run.rows, "direct")?.paced);
  const rows = run.rows.filter((r) => r.paced).map((row) => {
    const paced = usable(row.paced);
    const added = (f: (r: LoadResult) => number) => (row.id === "direct" || !paced || !direct ? DASH : deltaMs(f(paced) - f(direct)));
    return [
      SHORT[row.id],
      ms(paced?.ttftP50), ms(paced?.ttftP99),
      added((r) => r.ttftP50), added((r) => r.ttftP99),
      num(paced ? div(paced.tokens / paced.ok, paced.latencyP50 / 1000) : undefined), ms(paced?.latencyP50),
      `${row.paced!.errors}/${row.paced!.requests}`,
    ];
  });
  if (rows.length === 0) return undefined;
  return table(
    [`paced upstream (${PACED_TOKEN_MS} ms per token)`, "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 +ms", "added TTFT p99 +ms", "tok/s per stream (p50)", "stream p50 ms", "errors"],
    rows,
  );
}

function llamaPair(run: BenchRun): string | undefined {
  const base = byId(run.rows, "llama");
  const gw = byId(run.rows, "sluice-llama");
  if (!base || !gw) return undefined;
  const line = (what: string, f: (r: RowResult | undefined) => number | undefined, fmt: (v: number | undefined) => string) => [
    what, fmt(f(base)), fmt(f(gw)), ratio(div(f(gw), f(base))),
  ];
  return table(["llama.cpp (tiny model)", "in-process", "through Sluice", "Sluice ÷ in-process"], [
    line("small req/s", smallRps, num),
    line("small p50 ms", smallP50, ms),
    line("stream tok/s", streamTps, num),
    line("TTFT p50 ms", ttftP50, ms),
    line("stream end-to-end p50 ms", streamE2eP50, ms),
  ]);
}

function notes(run: BenchRun): string[] {
  const out: string[] = [];
  for (const row of run.rows) {
    const name = SHORT[row.id];
    if (row.reason) out.push(`${name}: ${row.status}: ${row.reason}`);
    for (const [what, r] of [["small", row.small], ["stream", row.stream], ["one stream", row.lone], ["paced", row.paced]] as const) {
      if (r && r.errors > 0) out.push(`${name} ${what}: ${r.errors} of ${r.requests} requests failed, e.g. ${r.errorExamples.join(" / ")}`);
    }
    const streamPhase = row.id === "llama" || row.id === "sluice-llama" ? run.profile.llamaStream : run.profile.stream;
    for (const [what, r, phase] of [["stream", row.stream, streamPhase], ["paced", row.paced, run.profile.paced]] as const) {
      const stream = usable(r);
      if (stream && stream.tokens / stream.ok < phase.maxTokens * 0.99) {
        out.push(`${name} ${what}: ${(stream.tokens / stream.ok).toFixed(1)} tokens per stream on average (asked for ${phase.maxTokens})`);
      }
    }
    out.push(...row.notes.map((n) => `${name}: ${n}`));
  }
  return out;
}

/** The whole report of one run, as Markdown (also what the terminal shows). */
export function render(run: BenchRun): string {
  const m = run.machine;
  const p = run.profile;
  const targets = [...checkTargets(run.rows, { ratio, ms, deltaMs, percent }), scaleTarget(run.fleet)];
  const pair = llamaPair(run);
  const cpu = cpuTable(run);
  const paced = pacedTable(run);
  const fleet = run.fleet;
  const rowSections = run.rows.length === 0 ? [] : [
    "### Results",
    "",
    resultsTable(run),
    ...(cpu ? ["", cpu, "", "Engine host: the sluice-miner agent process on Sluice rows; the engine's own process (llama-host.ts) on the in-process llama.cpp row. CPU is counted over the measured phase and divided by the requests started in it."] : []),
    "",
    "### Ratios (same run)",
    "",
    "Small requests/s:",
    "",
    ratioMatrix(run, smallRps),
    "",
    "Streamed tokens/s:",
    "",
    ratioMatrix(run, streamTps),
    "",
    addedLatency(run),
    ...(paced ? ["", `### Paced upstream: time to first token with ${p.paced.concurrency} streams in flight`, "", paced] : []),
    ...(pair ? ["", pair] : []),
    "",
  ];
  const fleetSections = fleet ? ["### Scale (fleet simulator)", "", fleetTable(fleet), ""] : [];
  const parts = [
    `## Run of ${run.startedAt.toISOString()} (profile: ${p.name}, ${((run.finishedAt.getTime() - run.startedAt.getTime()) / 1000).toFixed(0)} s)`,
    "",
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB.toFixed(1)} GiB memory, Linux ${m.kernel}, Node ${m.node}.`,
    `  1-minute load average ${m.loadAtStart.toFixed(2)} at the start and ${run.loadAtEnd.toFixed(2)} at the end (anything else running on the machine skews every row).`,
    `- Sluice runtime: ${run.runtime.sluice}.`,
    `- Peers: ${run.runtime.nginx}; ${run.runtime.portkey}; upstream: test/support's synthetic OpenAI-compatible server in its own Node process, no delays; for the paced phase, a second one writing each stream's tokens ${PACED_TOKEN_MS} ms apart.`,
    `- Engine rows: ${run.runtime.llama}.`,
    `- Load (closed loop, keep-alive node:http pool of one connection per concurrent request, all on 127.0.0.1):`,
    `  small = ${phaseText(p.small, `non-streaming chat, max_tokens ${p.small.maxTokens}`)};`,
    `  stream = ${phaseText(p.stream, `${p.stream.maxTokens}-token streams with include_usage`)};`,
    `  one stream = ${phaseText(p.lone, "the same streams one at a time")}: the path's own added time to first token (under the stream load it also includes queueing for the CPU);`,
    `  paced = ${phaseText(p.paced, `the same ${p.paced.maxTokens}-token streams from the paced upstream (about ${((p.paced.maxTokens * PACED_TOKEN_MS) / 1000).toFixed(1)} s a stream, as an engine decodes)`)}, on the direct, nginx (a second port of the same nginx) and Sluice (a second chute of the same agent) rows; Portkey is left out, its streaming fails. The ramp keeps equal streams of the closed loop from running in lockstep: started at once, they arrive in bursts of ${p.paced.concurrency} and each TTFT also holds the admission of the rest of its burst.`,
    `  The two TTFTs: under the stream load the instant upstream writes a whole stream at once and the ${m.cores} cores are saturated, so its TTFT is queueing for the CPU (throughput in disguise); under the paced load, far below what saturates the CPU, TTFT is the path's own added first-token latency with ${p.paced.concurrency} streams in flight, which issue 7's TTFT target is judged on.`,
    `  llama rows: small = ${phaseText(p.llamaSmall, `max_tokens ${p.llamaSmall.maxTokens}`)}; stream = ${phaseText(p.llamaStream, `${p.llamaStream.maxTokens}-token streams`)}.`,
    `  Rows are measured in turns, in two groups (the synthetic rows; the two llama.cpp rows): every target of a group up at once, each phase cut into ${TURNS.synthetic} slices per row (${TURNS.llama} on the llama.cpp rows), run in the table's order, then in reverse, and so on (each row's warm-up before its first slice), and a row's slices counted as one load. So a drift in the machine's speed, which reaches tens of percent over minutes here, touches every row of a comparison alike.`,
    ...(run.fleet ? [`  ${fleetLoadText(run.fleet.phase)}.`] : []),
    `  TTFT = request start to the arrival of the first non-empty content token; tok/s = completion tokens (usage chunk) of successful streams ÷ wall time; tok/s per stream = a stream's completion tokens ÷ the p50 stream duration.`,
    "",
    ...rowSections,
    ...fleetSections,
    "### Targets (issue 7)",
    "",
    table(["target", "measured", "result"], targets.map((t) => [t.target, t.measured, t.verdict]), ["left", "right", "left"]),
    "",
    "### Notes",
    "",
    ...notes(run).map((n) => `- ${n}`),
    ...(fleet ? [...fleetFailures(fleet).map((f) => `- fleet: FAILED: ${f}`), ...fleet.notes.map((n) => `- fleet: ${n}`)] : []),
  ];
  return parts.join("\n");
}
