import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { combineLoads, runLoad, type Sample } from "./runner.ts";

const fixed = (latencies: number[], failEvery = 0) => (i: number): Promise<Sample> =>
  Promise.resolve(failEvery > 0 && i % failEvery === failEvery - 1
    ? { ok: false, error: "boom", latencyMs: 0 }
    : { ok: true, latencyMs: latencies[i % latencies.length]!, ttftMs: latencies[i % latencies.length]! / 10, tokens: 2 });

describe("combineLoads", () => {
  it("counts slices of a phase as one load: percentiles over every sample, rates over the summed wall time", async () => {
    const a = await runLoad({ concurrency: 1, durationMs: 60_000, maxRequests: 4 }, fixed([10, 20, 30, 40]));
    const b = await runLoad({ concurrency: 1, durationMs: 60_000, maxRequests: 6 }, fixed([100, 200, 300], 3));
    const all = combineLoads([a, b]);
    expect({ requests: all.requests, ok: all.ok, errors: all.errors, tokens: all.tokens }).toEqual({ requests: 10, ok: 8, errors: 2, tokens: 16 });
    expect(all.errorExamples).toEqual(["boom"]);
    // Samples: 10 20 30 40 100 200 100 200 (nearest rank).
    expect(all.latencyP50).toBe(40);
    expect(all.latencyP99).toBe(200);
    expect(all.ttftP50).toBe(4);
    expect(all.wallMs).toBeCloseTo(a.wallMs + b.wallMs, 6);
    expect(all.rps).toBeCloseTo((8 * 1000) / all.wallMs, 6);
    expect(all.tokensPerSec).toBeCloseTo((16 * 1000) / all.wallMs, 6);
  });
});

describe("runLoad with a ramp", () => {
  it("spreads the workers' first requests over rampMs and records only requests started after it", async () => {
    const t0 = performance.now();
    const starts: number[] = [];
    const task = async (): Promise<Sample> => {
      starts.push(performance.now() - t0);
      await sleep(200);
      return { ok: true, latencyMs: 200, tokens: 1 };
    };
    const r = await runLoad({ concurrency: 4, durationMs: 200, maxRequests: 1_000, rampMs: 160 }, task);
    // First requests at about 0, 40, 80 and 120 ms (not recorded), then 200 to 320 ms (recorded); none after 360 ms.
    expect(starts.length).toBe(8);
    expect(starts[3]! - starts[0]!).toBeGreaterThanOrEqual(100);
    expect({ requests: r.requests, ok: r.ok, tokens: r.tokens }).toEqual({ requests: 4, ok: 4, tokens: 4 });
  });
});
