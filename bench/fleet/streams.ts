import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import type { HttpLoadClient } from "../load/http-client.ts";
import { runLoad, type LoadResult, type Sample } from "../load/runner.ts";

export interface StreamsResult extends LoadResult {
  /** Streams that were delivering at the same moment (between their first token and their end), at most. */
  peakConcurrent: number;
  /** Completed streams whose token count was not the one asked for (counted in `errors` too). */
  wrongTokenCount: number;
  /** How long the failed streams had run when they failed, shortest and longest (ms). */
  failedAfterMs?: { min: number; max: number };
}

/** The most intervals open at one moment (an interval ending as another starts does not overlap it). */
export function peakOverlap(spans: readonly { from: number; to: number }[]): number {
  const edges = spans.flatMap((s) => [{ t: s.from, d: 1 }, { t: s.to, d: -1 }]).sort((a, b) => a.t - b.t || a.d - b.d);
  let open = 0;
  let peak = 0;
  for (const e of edges) {
    open += e.d;
    peak = Math.max(peak, open);
  }
  return peak;
}

/**
 * `count` streaming chat completions, opened `openPerSec` a second (0: all at once), one
 * connection each, every one checked: it must end with [DONE], no error event, and exactly
 * `maxTokens` completion tokens.
 */
export async function openStreams(client: HttpLoadClient, count: number, maxTokens: number, openPerSec: number, timeoutMs: number): Promise<StreamsResult> {
  const spans: { from: number; to: number }[] = [];
  const failedAfter: number[] = [];
  let wrongTokenCount = 0;
  const t0 = performance.now();
  const task = async (i: number): Promise<Sample> => {
    if (openPerSec > 0) await sleep(t0 + (i * 1000) / openPerSec - performance.now());
    const start = performance.now();
    const sample = await client.stream({ max_tokens: maxTokens, stream: true, seed: i, temperature: 0.7 });
    if (!sample.ok) {
      failedAfter.push(sample.latencyMs);
      return sample;
    }
    spans.push({ from: start + sample.ttftMs!, to: start + sample.latencyMs });
    if (sample.tokens === maxTokens) return sample;
    wrongTokenCount++;
    return { ...sample, ok: false, error: `${sample.tokens} completion tokens, asked for ${maxTokens}` };
  };
  // One request per worker: runLoad starts all `count` tasks at once (each waits for its turn to open).
  const opening = openPerSec > 0 ? (count * 1000) / openPerSec : 0;
  const result = await runLoad({ concurrency: count, durationMs: opening + timeoutMs, maxRequests: count }, task);
  return {
    ...result,
    peakConcurrent: peakOverlap(spans),
    wrongTokenCount,
    ...(failedAfter.length > 0 ? { failedAfterMs: { min: Math.min(...failedAfter), max: Math.max(...failedAfter) } } : {}),
  };
}
