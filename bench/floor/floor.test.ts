import { describe, expect, it } from "vitest";
import { PROFILES } from "../profile.ts";
import { renderFloor, runFloorBench } from "./run.ts";

/** `npm run bench:floor` with a tiny load, so it cannot rot: both targets serve and the table renders. */
describe("the floor benchmark (smoke run)", () => {
  it("serves small requests through the harness and through Sluice, and reports the CPU of each", { timeout: 120_000 }, async () => {
    // Enough requests that each target's CPU shows in /proc, which counts it in 10 ms ticks (20
    // requests, the smoke profile's bound, sometimes read 0).
    const result = await runFloorBench({ small: { ...PROFILES.smoke.small, durationMs: 600, maxRequests: 400, warmupMs: 100 }, turns: 2 });
    for (const row of [result.floor, result.sluice]) {
      expect({ label: row.label, errors: row.load.errors }).toEqual({ label: row.label, errors: 0 });
      expect(row.load.ok).toBeGreaterThan(0);
      expect(row.workerdCpuMsPerRequest).toBeGreaterThan(0);
    }
    expect(renderFloor(result)).toContain("Sluice's own work in workerd");
  });
});
