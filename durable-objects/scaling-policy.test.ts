import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, decide, type LoadSample, type PolicyConfig, type PolicyInput } from "./scaling-policy.ts";

const CFG: PolicyConfig = { ...DEFAULT_POLICY, shortWindowMs: 30_000, longWindowMs: 300_000, cooldownMs: 120_000 };
const TICK = 5_000;
const PER = 4; // concurrency per instance

/** Simulates a chute: each tick, `load(t)` requests want to run; instances change as the policy says (launches take `launchTicks`). */
function simulate(opts: { ticks: number; load: (tick: number) => number; min?: number; max?: number; start?: number; launchTicks?: number }) {
  const min = opts.min ?? 0;
  const max = opts.max ?? 10;
  let current = opts.start ?? min;
  let launching: number[] = []; // tick at which each launch comes up
  let lastScaleAt: number | null = null;
  const samples: LoadSample[] = [];
  const history: { tick: number; current: number; pending: number; target: number; refused: number }[] = [];
  for (let tick = 1; tick <= opts.ticks; tick++) {
    const now = tick * TICK;
    current += launching.filter((t) => t <= tick).length;
    launching = launching.filter((t) => t > tick);
    const want = opts.load(tick);
    const capacity = current * PER;
    const inflight = Math.min(want, capacity);
    const refused = want - inflight;
    samples.push({ t: now, inflight, capacity, instances: current, requests: want, refused });
    const input: PolicyInput = {
      now,
      samples: samples.filter((s) => s.t > now - CFG.longWindowMs),
      current,
      pending: launching.length,
      min,
      max,
      perInstance: PER,
      lastScaleAt,
    };
    const d = decide(input, CFG);
    const have = current + launching.length;
    if (d.target > have) {
      for (let i = 0; i < d.target - have; i++) launching.push(tick + (opts.launchTicks ?? 2));
      lastScaleAt = now;
    } else if (d.target < current && launching.length === 0) {
      current -= 1;
      lastScaleAt = now;
    }
    history.push({ tick, current, pending: launching.length, target: d.target, refused });
  }
  return history;
}

describe("scaling policy", () => {
  it("scales from zero when requests arrive with no instance", () => {
    const h = simulate({ ticks: 6, load: () => 1 });
    expect(h[0]!.target).toBe(1);
    expect(h.at(-1)!.current).toBe(1);
  });

  it("keeps the minimum and never exceeds the maximum", () => {
    const idle = simulate({ ticks: 200, load: () => 0, min: 2, start: 0 });
    expect(idle.at(-1)!.current).toBe(2);
    const flood = simulate({ ticks: 60, load: () => 1000, max: 5, start: 1 });
    expect(Math.max(...flood.map((s) => s.current + s.pending))).toBe(5);
  });

  it("scales up under sustained load to about the target utilization, and back down when idle", () => {
    // 30 concurrent requests for 10 minutes, then nothing for 30 minutes.
    const h = simulate({ ticks: 480, load: (t) => (t <= 120 ? 30 : 0), start: 1 });
    const busy = h[119]!;
    // 30 requests at 60% of 4 slots per instance: 13 instances would be the sizing; the max is 10.
    expect(busy.current).toBe(10);
    // Refusals stop once scaled.
    expect(h.slice(100, 120).every((s) => s.refused === 0)).toBe(true);
    const idle = h.at(-1)!;
    expect(idle.current).toBe(0);
  });

  it("does not thrash under a steady load in the hysteresis band", () => {
    // 10 requests on 4 instances (16 slots) = 62% utilization: between the 30% and 80% thresholds.
    const h = simulate({ ticks: 240, load: () => 10, start: 4 });
    const changes = h.filter((s, i) => i > 0 && s.current !== h[i - 1]!.current).length;
    expect(changes).toBe(0);
    expect(h.at(-1)!.current).toBe(4);
  });

  it("rides out short bursts and dips without scaling down in the cool-down", () => {
    // Load alternates between 12 and 2 every minute on 4 instances.
    const h = simulate({ ticks: 240, load: (t) => (Math.floor(t / 12) % 2 === 0 ? 12 : 2), start: 4 });
    const downs = h.filter((s, i) => i > 0 && s.current < h[i - 1]!.current).length;
    expect(downs).toBe(0);
  });

  it("scales down one instance at a time, each after a cool-down", () => {
    const h = simulate({ ticks: 400, load: () => 0, start: 4 });
    const downTicks = h.filter((s, i) => i > 0 && s.current < h[i - 1]!.current).map((s) => s.tick);
    expect(downTicks).toHaveLength(4);
    for (let i = 1; i < downTicks.length; i++) expect((downTicks[i]! - downTicks[i - 1]!) * TICK).toBeGreaterThanOrEqual(CFG.cooldownMs);
    // Not before the long window has been seen.
    expect(downTicks[0]! * TICK).toBeGreaterThanOrEqual(CFG.longWindowMs * 0.9);
  });

  it("does not pile up launches while one is pending", () => {
    // 6 requests on one instance of 4 slots: one more instance is enough (75% utilization).
    // Launches take 6 ticks, and requests are refused all that time.
    const h = simulate({ ticks: 12, load: () => 6, start: 1, launchTicks: 6 });
    expect(h[0]!.pending).toBe(1);
    expect(Math.max(...h.map((s) => s.current + s.pending))).toBe(2);
    expect(h.at(-1)!.current).toBe(2);
  });

  it("refused requests alone trigger a scale-up", () => {
    const samples: LoadSample[] = [{ t: 1000, inflight: 1, capacity: 4, instances: 1, requests: 100, refused: 5 }];
    const d = decide({ now: 1000, samples, current: 1, pending: 0, min: 0, max: 4, perInstance: 4, lastScaleAt: null }, CFG);
    expect(d.target).toBe(2);
    expect(d.reason).toMatch(/refused/);
  });
});
