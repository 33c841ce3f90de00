import type { RowId, RowResult } from "../bench.ts";
import type { LoadResult } from "../load/runner.ts";
import { PACED_TOKEN_MS } from "../profile.ts";

/** A phase's result when at least one request of it succeeded. */
export function usable(result: LoadResult | undefined): LoadResult | undefined {
  return result && result.ok > 0 ? result : undefined;
}

export const smallRps = (row: RowResult | undefined): number | undefined => usable(row?.small)?.rps;
export const streamTps = (row: RowResult | undefined): number | undefined => usable(row?.stream)?.tokensPerSec;
export const smallP50 = (row: RowResult | undefined): number | undefined => usable(row?.small)?.latencyP50;
export const ttftP50 = (row: RowResult | undefined): number | undefined => usable(row?.stream)?.ttftP50;
export const streamE2eP50 = (row: RowResult | undefined): number | undefined => usable(row?.stream)?.latencyP50;
export const pacedTtftP50 = (row: RowResult | undefined): number | undefined => usable(row?.paced)?.ttftP50;

export function byId(rows: readonly RowResult[], id: RowId): RowResult | undefined {
  return rows.find((r) => r.id === id);
}

export function div(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

export function sub(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}

export type Verdict = "PASS" | "FAIL" | "n/a";

export interface TargetCheck {
  target: string;
  measured: string;
  verdict: Verdict;
}

const verdict = (value: number | undefined, ok: (v: number) => boolean): Verdict =>
  value === undefined ? "n/a" : ok(value) ? "PASS" : "FAIL";

/**
 * The targets of issue 7 on the rows, checked against this run's numbers (ratios from the same
 * run); the scale target is checked in report/fleet.ts.
 */
export function checkTargets(rows: readonly RowResult[], fmt: {
  ratio(v: number | undefined): string;
  ms(v: number | undefined): string;
  deltaMs(v: number | undefined): string;
  percent(v: number | undefined): string;
}): TargetCheck[] {
  const direct = byId(rows, "direct");
  const portkey = byId(rows, "portkey");
  const sluice = byId(rows, "sluice");
  const llama = byId(rows, "llama");
  const sluiceLlama = byId(rows, "sluice-llama");
  const vsPortkey = div(smallRps(sluice), smallRps(portkey));
  const p50s = [smallP50(sluice), smallP50(portkey)];
  const p50Gap = sub(p50s[0], p50s[1]);
  const tpsShare = div(streamTps(sluice), streamTps(direct));
  // Judged on the paced phase: under the instant upstream's saturating load, TTFT is queueing for the CPU.
  const addedTtft = sub(pacedTtftP50(sluice), pacedTtftP50(direct));
  const streams = usable(sluice?.paced)?.concurrency;
  const e2eOver = div(sub(streamE2eP50(sluiceLlama), streamE2eP50(llama)), streamE2eP50(llama));
  return [
    {
      target: "small requests, Sluice full path: >= 1.5x Portkey's requests/s",
      measured: fmt.ratio(vsPortkey),
      verdict: verdict(vsPortkey, (v) => v >= 1.5),
    },
    {
      target: "... with lower p50 latency than Portkey",
      measured: p50Gap === undefined ? "—" : `${fmt.ms(p50s[0])} vs ${fmt.ms(p50s[1])} ms`,
      verdict: verdict(p50Gap, (v) => v < 0),
    },
    {
      target: "streamed tokens/s through the full path: >= 25% of the direct floor",
      measured: fmt.percent(tpsShare),
      verdict: verdict(tpsShare, (v) => v >= 0.25),
    },
    {
      target: `added TTFT over the direct paced upstream (${PACED_TOKEN_MS} ms per token): p50 <= 3 ms at 20 concurrent streams${streams !== undefined && streams !== 20 ? ` (this run: ${streams})` : ""}`,
      measured: addedTtft === undefined ? "—" : `${fmt.deltaMs(addedTtft)} ms`,
      verdict: verdict(addedTtft, (v) => v <= 3),
    },
    {
      target: "built-in llama.cpp behind the gateway: 256-token end-to-end time within 5% of the engine in-process (p50)",
      measured: e2eOver === undefined ? "—" : `${e2eOver >= 0 ? "+" : ""}${(e2eOver * 100).toFixed(1)}%`,
      verdict: verdict(e2eOver, (v) => v <= 0.05),
    },
  ];
}
