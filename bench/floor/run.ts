/**
 * The floor measurement behind `npm run bench:floor` (see bench/floor.ts): the fixed shape of a
 * request with none of Sluice's work, against Sluice's full path, small requests in turns.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { ROOT } from "../../test/support/paths.ts";
import { HttpLoadClient, type ChatBody } from "../load/http-client.ts";
import type { LoadResult } from "../load/runner.ts";
import { measureTurns, type TurnRow, type TurnTarget } from "../load/turns.ts";
import { commandName, descendants } from "../proc.ts";
import type { Phase } from "../profile.ts";
import { ManagedChild } from "../targets/child.ts";
import { startSluice, syntheticEngine, SYNTHETIC_CHUTE } from "../targets/sluice.ts";
import type { LoadClient } from "../targets/types.ts";
import { startUpstream } from "../targets/upstream.ts";

const OUT = `${ROOT}/.build/floor-bench`;

export interface FloorOptions {
  /** The small-request load (its durationMs is cut into `turns` slices per target). */
  small: Phase;
  turns: number;
}

export interface FloorRow {
  label: string;
  load: LoadResult;
  workerdCpuMsPerRequest: number;
  agentCpuMsPerRequest: number;
}

export interface FloorResult {
  options: FloorOptions;
  floor: FloorRow;
  sluice: FloorRow;
}


/** Bundles the harness Worker (bench/floor/worker.ts) as `wrangler deploy` would. */
function buildHarness(): void {
  execFileSync(
    process.execPath,
    [`${ROOT}/node_modules/wrangler/bin/wrangler.js`, "deploy", "--dry-run", "--config", "bench/floor/wrangler.jsonc", "--outdir", OUT],
    { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "warn" } },
  );
}

/** Runs both targets against one synthetic upstream, in turns (A B, B A, ...), as `npm run bench` does. */
export async function runFloorBench(options: FloorOptions): Promise<FloorResult> {
  buildHarness();
  const workerdNow = () => new Set(descendants(process.pid).filter((pid) => commandName(pid) === "workerd"));
  const upstream = await startUpstream();
  const persist = await mkdtemp(join(tmpdir(), "sluice-floor-bench-"));
  const closers: (() => Promise<unknown>)[] = [() => upstream.close(), () => rm(persist, { recursive: true, force: true })];
  try {
    // Sluice first: its target finds its workerd among this process's children.
    const sluice = await startSluice({
      chute: SYNTHETIC_CHUTE,
      engine: syntheticEngine(upstream.url),
      creditUsd: 100_000,
    });
    closers.unshift(() => sluice.close());
    const before = workerdNow();
    const mf = new Miniflare({
      modules: true,
      scriptPath: `${OUT}/worker.js`,
      compatibilityDate: "2025-12-01",
      durableObjects: { SESSION: { className: "FloorSession", useSQLite: true } },
      durableObjectsPersist: `${persist}/do`,
      // As the bench's gateway: the Worker on its own socket, without Miniflare's entry Worker.
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    });
    closers.unshift(() => mf.dispose());
    await mf.ready;
    const url = (await mf.unsafeGetDirectURL()).toString().replace(/\/$/, "");
    const floorWorkerd = [...workerdNow()].filter((pid) => !before.has(pid));
    const agentArgs = ["--import", "tsx", `${ROOT}/bench/floor/agent.ts`, `${url.replace(/^http/, "ws")}/connect`, upstream.url];
    const agent = new ManagedChild("floor agent", process.execPath, agentArgs, { cwd: ROOT });
    closers.unshift(() => agent.stop());
    await agent.waitFor(/FLOOR_AGENT_READY/, 30_000);

    const { small, turns } = options;
    const body = (i: number): ChatBody => ({ max_tokens: small.maxTokens, stream: false, seed: i, temperature: 0.7 });
    const target = (label: string, client: (n: number) => LoadClient, gateway: number[], engine: number[]): TurnTarget => ({
      label,
      connect: () => {
        const c = client(small.concurrency);
        return { task: (i) => c.complete(body(i)), close: () => c.close() };
      },
      gateway,
      engine,
    });
    const [floor, full] = await measureTurns(
      [
        target("floor: the same hops, no work (bench/floor)", (n) => new HttpLoadClient({ baseURL: `${url}/v1`, headers: {}, model: "synthetic" }, n, 30_000), floorWorkerd, [agent.pid]),
        target("Sluice full path (openai-upstream)", (n) => sluice.client(n, 30_000), sluice.gatewayPids(), sluice.agentPids?.() ?? []),
      ],
      { concurrency: small.concurrency, durationMs: small.durationMs, maxRequests: small.maxRequests, warmupMs: small.warmupMs },
      turns,
    );
    const row = (r: TurnRow): FloorRow => ({ label: r.label, load: r.load, workerdCpuMsPerRequest: r.gatewayCpuMsPerRequest, agentCpuMsPerRequest: r.engineCpuMsPerRequest });
    return { options, floor: row(floor!), sluice: row(full!) };
  } finally {
    for (const close of closers) await close().catch(() => undefined);
  }
}

export function renderFloor(r: FloorResult): string {
  const { small, turns } = r.options;
  const lines = [
    `Small non-streaming requests (max_tokens ${small.maxTokens}), concurrency ${small.concurrency}, ${turns} slices of ${small.durationMs / turns / 1000} s per target, in turns:`,
    "",
    "| target | req/s | p50 ms | p99 ms | errors | workerd CPU ms/request | agent CPU ms/request |",
    "| ------ | ----: | -----: | -----: | -----: | ---------------------: | -------------------: |",
  ];
  for (const x of [r.floor, r.sluice]) {
    lines.push(
      `| ${x.label} | ${Math.round(x.load.rps).toLocaleString("en-US")} | ${x.load.latencyP50.toFixed(2)} | ${x.load.latencyP99.toFixed(1)} | ` +
        `${x.load.errors}/${x.load.requests} | ${x.workerdCpuMsPerRequest.toFixed(3)} | ${x.agentCpuMsPerRequest.toFixed(3)} |`,
    );
  }
  const own = r.sluice.workerdCpuMsPerRequest - r.floor.workerdCpuMsPerRequest;
  lines.push(
    "",
    `Sluice's own work in workerd: ${own >= 0 ? "+" : ""}${own.toFixed(3)} ms per request ` +
      `(${Math.round((100 * own) / Math.max(1e-9, r.sluice.workerdCpuMsPerRequest))}% of its workerd CPU); ` +
      `Sluice serves ${(r.sluice.load.rps / Math.max(1e-9, r.floor.load.rps)).toFixed(2)}x the floor's requests/s.`,
  );
  return lines.join("\n");
}
