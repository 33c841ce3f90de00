import { describe, expect, it } from "vitest";
import { runBench } from "./bench.ts";
import { fleetFailures } from "./fleet/run.ts";
import { PROFILES } from "./profile.ts";
import { render } from "./report/render.ts";

/**
 * `npm run bench` with tiny loads, so the benchmark cannot rot: every row and the fleet
 * simulator start, serve requests and stop, and the report renders. The numbers mean nothing
 * here. nginx is used when installed and skipped otherwise (the bench itself installs it; the
 * test suite does not).
 */
describe("the benchmark (smoke run)", () => {
  it("runs every row and the fleet end to end and renders the report", { timeout: 240_000 }, async () => {
    const lines: string[] = [];
    const run = await runBench({
      profile: PROFILES.smoke,
      rows: ["direct", "nginx", "portkey", "sluice", "llama", "sluice-llama"],
      fleet: true,
      installNginx: false,
      build: false,
      log: (line) => lines.push(line),
    });
    const row = (id: string) => run.rows.find((r) => r.id === id)!;
    for (const id of ["direct", "sluice", "llama", "sluice-llama"]) {
      expect({ id, status: row(id).status, reason: row(id).reason }).toEqual({ id, status: "ok", reason: undefined });
      expect({ id, small: row(id).small!.errors, stream: row(id).stream!.errors }).toEqual({ id, small: 0, stream: 0 });
      expect(row(id).small!.ok).toBeGreaterThan(0);
      expect(row(id).stream!.tokens).toBeGreaterThan(0);
    }
    // The paced phase: the paced upstream called directly and through Sluice's second chute.
    for (const id of ["direct", "sluice"]) {
      expect({ id, paced: row(id).paced?.errors }).toEqual({ id, paced: 0 });
      expect(row(id).paced!.tokens).toBeGreaterThan(0);
    }
    if (row("nginx").status === "ok") expect(row("nginx").paced?.errors).toBe(0);
    expect(row("portkey").paced).toBeUndefined();
    expect(row("sluice").gatewayRssBytes).toBeGreaterThan(0);
    expect(row("sluice").small!.gatewayCpuMsPerRequest).toBeGreaterThanOrEqual(0);
    // Portkey proxies non-streaming requests; its streaming failure on this Node is recorded, not hidden.
    expect(row("portkey").status).toBe("ok");
    expect(row("portkey").small!.ok).toBeGreaterThan(0);
    expect(["ok", "skipped"]).toContain(row("nginx").status);
    // The fleet simulator, at a few agents and streams: every agent connects, every stream is served.
    const fleet = run.fleet!;
    expect({ status: fleet.status, reason: fleet.reason, failures: fleetFailures(fleet) }).toEqual({ status: "ok", reason: undefined, failures: [] });
    expect(fleet.streams!.ok).toBe(PROFILES.smoke.fleet.streams);
    expect(fleet.readings.idle!.rssBytes).toBeGreaterThan(0);
    const report = render(run);
    expect(report).toContain("### Targets (issue 7)");
    expect(report).toContain("### Paced upstream: time to first token");
    expect(report).toMatch(/\| added TTFT over the direct paced upstream \(4 ms per token\): p50 <= 3 ms at 20 concurrent streams \(this run: 4\) +\| +[+-][\d.]+ ms \| (PASS|FAIL) /);
    expect(report).toContain("running workerd");
    // Rows are measured in turns (bench.ts, measureInTurns).
    expect(report).toContain("Rows are measured in turns");
    expect(report).toContain("### Scale (fleet simulator)");
  });
});
