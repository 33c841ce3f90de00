import { describe, expect, it } from "vitest";
import { PROFILES } from "../profile.ts";
import { renderAb, runAb } from "./run.ts";

/** `npm run bench:ab` with a tiny load, so it cannot rot: both builds serve and the comparison renders. */
describe("the A/B benchmark (smoke run)", () => {
  it("builds the gateway at a revision beside the working tree's, and measures both in turns", { timeout: 180_000 }, async () => {
    // Enough requests that each gateway's CPU shows in /proc, which counts it in 10 ms ticks.
    const result = await runAb({ base: "HEAD", phase: "small", load: { ...PROFILES.smoke.small, durationMs: 600, maxRequests: 400, warmupMs: 100 }, turns: 2 });
    expect(result.baseCommit).toMatch(/^[0-9a-f]{40}$/);
    for (const row of [result.base, result.change]) {
      expect({ label: row.label, errors: row.load.errors }).toEqual({ label: row.label, errors: 0 });
      expect(row.load.ok).toBeGreaterThan(0);
      expect(row.gatewayCpuMsPerRequest).toBeGreaterThan(0);
    }
    expect(renderAb(result)).toContain("change vs base: req/s");
  });
});
