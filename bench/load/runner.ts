import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { ascending, percentile } from "./stats.ts";

/** What one request produced. */
export interface Sample {
  ok: boolean;
  /** Why it failed (status and a short body excerpt, or the exception). */
  error?: string;
  /** Request start to the last byte. */
  latencyMs: number;
  /** Request start to the first non-empty content token (streams only). */
  ttftMs?: number;
  /** Completion tokens delivered (streams: the usage chunk, else content events). */
  tokens?: number;
}

/** One request; `i` numbers requests within a phase (used for per-request seeds). */
export type Task = (i: number) => Promise<Sample>;

export interface LoadOptions {
  /** Requests kept in flight (a closed loop: each worker starts the next when one ends). */
  concurrency: number;
  /** No new request starts after this long. */
  durationMs: number;
  /** No more than this many requests start. */
  maxRequests: number;
  /**
   * Spread the workers' first requests evenly over this long, so that requests of equal length do
   * not arrive in lockstep bursts, and record only requests started after it; durationMs counts
   * from its end, and so do the rates (0 or absent: every worker starts at once, all recorded).
   */
  rampMs?: number;
}

export interface LoadResult {
  concurrency: number;
  requests: number;
  ok: number;
  errors: number;
  /** Up to three distinct error messages, first seen first. */
  errorExamples: string[];
  /** From the first request's start to the last response's end. */
  wallMs: number;
  /** Successful requests per second. */
  rps: number;
  latencyP50: number;
  latencyP99: number;
  ttftP50: number;
  ttftP99: number;
  /** Completion tokens of successful requests per second of wall time. */
  tokensPerSec: number;
  tokens: number;
  /** Every successful request's latency and time to first token, ascending (for combineLoads). */
  sorted: { latency: number[]; ttft: number[] };
}

/**
 * Runs `task` in a closed loop at fixed concurrency, bounded by time and by count; every
 * request that started is awaited (the task itself must bound its own duration).
 */
export async function runLoad(opts: LoadOptions, task: Task): Promise<LoadResult> {
  const latencies: number[] = [];
  const ttfts: number[] = [];
  const examples: string[] = [];
  let started = 0;
  let recorded = 0;
  let ok = 0;
  let errors = 0;
  let tokens = 0;
  const ramp = opts.rampMs ?? 0;
  const t0 = performance.now() + ramp;
  const deadline = t0 + opts.durationMs;
  const worker = async (k: number): Promise<void> => {
    if (ramp > 0) await sleep((k * ramp) / opts.concurrency);
    while (started < opts.maxRequests && performance.now() < deadline) {
      const record = performance.now() >= t0;
      const sample = await task(started++).catch((err: unknown): Sample => ({ ok: false, error: String(err), latencyMs: 0 }));
      if (!record) continue;
      recorded++;
      if (!sample.ok) {
        errors++;
        const message = sample.error ?? "failed";
        if (examples.length < 3 && !examples.includes(message)) examples.push(message);
        continue;
      }
      ok++;
      latencies.push(sample.latencyMs);
      if (sample.ttftMs !== undefined) ttfts.push(sample.ttftMs);
      tokens += sample.tokens ?? 0;
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, k) => worker(k)));
  return summary({ concurrency: opts.concurrency, requests: recorded, ok, errors, errorExamples: examples, wallMs: performance.now() - t0, tokens }, latencies, ttfts);
}

type Counts = Pick<LoadResult, "concurrency" | "requests" | "ok" | "errors" | "errorExamples" | "wallMs" | "tokens">;

/** A load's result from its counts and its successful requests' latencies and times to first token. */
function summary(counts: Counts, latencies: readonly number[], ttfts: readonly number[]): LoadResult {
  const latency = ascending(latencies);
  const ttft = ascending(ttfts);
  return {
    ...counts,
    rps: (counts.ok * 1000) / counts.wallMs,
    latencyP50: percentile(latency, 50),
    latencyP99: percentile(latency, 99),
    ttftP50: percentile(ttft, 50),
    ttftP99: percentile(ttft, 99),
    tokensPerSec: (counts.tokens * 1000) / counts.wallMs,
    sorted: { latency, ttft },
  };
}

/** Loads run in turns (slices of one phase) as if they were one: counts and times summed, percentiles over all samples. */
export function combineLoads(parts: readonly LoadResult[]): LoadResult {
  const sum = (f: (r: LoadResult) => number) => parts.reduce((n, r) => n + f(r), 0);
  const counts: Counts = {
    concurrency: parts[0]?.concurrency ?? 0,
    requests: sum((r) => r.requests),
    ok: sum((r) => r.ok),
    errors: sum((r) => r.errors),
    errorExamples: [...new Set(parts.flatMap((r) => r.errorExamples))].slice(0, 3),
    wallMs: sum((r) => r.wallMs),
    tokens: sum((r) => r.tokens),
  };
  return summary(counts, parts.flatMap((r) => r.sorted.latency), parts.flatMap((r) => r.sorted.ttft));
}
