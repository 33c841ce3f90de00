/**
 * `npm run bench:floor`: how much of the Sluice gateway's CPU per small request is Sluice's own
 * work, and how much the fixed shape of the path costs in workerd whatever runs in it.
 *
 * Two targets against one synthetic upstream, measured in turns (A B, B A, ...) as the main
 * bench does:
 * - the floor: a harness Worker (bench/floor/) with the same hops and none of the work (a
 *   Worker, one Durable Object RPC, the agent's hibernated WebSocket, an agent process that
 *   calls the upstream);
 * - Sluice's full path, as row 4 of `npm run bench`.
 * Prints req/s, latency and the CPU per request of workerd and of the agent for each, and the
 * difference: the workerd CPU that Sluice's own work adds per request.
 *
 *   FLOOR_BENCH_SLICE_MS (default 4000) and FLOOR_BENCH_TURNS (default 4) size the load.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { ROOT } from "../test/support/paths.ts";
import { HttpLoadClient, type ChatBody } from "./load/http-client.ts";
import { combineLoads, runLoad, type LoadResult } from "./load/runner.ts";
import { commandName, descendants, totalCpuMs } from "./proc.ts";
import { PROFILES } from "./profile.ts";
import { ManagedChild } from "./targets/child.ts";
import { startSluice, SYNTHETIC_CHUTE } from "./targets/sluice.ts";
import type { LoadClient } from "./targets/types.ts";
import { startUpstream } from "./targets/upstream.ts";

const OUT = `${ROOT}/.build/floor-bench`;
const SMALL = PROFILES.default.small;
const SLICE_MS = Number(process.env.FLOOR_BENCH_SLICE_MS ?? 4_000);
const TURNS = Number(process.env.FLOOR_BENCH_TURNS ?? 4);

interface Target {
  label: string;
  client(connections: number): LoadClient;
  workerd: number[];
  agent: number[];
  slices: LoadResult[];
  workerdMs: number;
  agentMs: number;
}

execFileSync(process.execPath, [`${ROOT}/scripts/build-worker.mjs`], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
execFileSync(
  process.execPath,
  [`${ROOT}/node_modules/wrangler/bin/wrangler.js`, "deploy", "--dry-run", "--config", "bench/floor/wrangler.jsonc", "--outdir", OUT],
  { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "warn" } },
);

const workerdNow = () => new Set(descendants(process.pid).filter((pid) => commandName(pid) === "workerd"));
const upstream = await startUpstream();
const persist = await mkdtemp(join(tmpdir(), "sluice-floor-bench-"));
const closers: (() => Promise<unknown>)[] = [() => upstream.close(), () => rm(persist, { recursive: true, force: true })];
try {
  // Sluice first: its target finds its workerd among this process's children.
  const sluice = await startSluice({
    chute: SYNTHETIC_CHUTE,
    engine: { kind: "openai-upstream", baseURL: upstream.url, model: "synthetic", parallel: SYNTHETIC_CHUTE.concurrency },
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
  const agent = new ManagedChild("floor agent", process.execPath, ["--import", "tsx", `${ROOT}/bench/floor/agent.ts`, `${url.replace(/^http/, "ws")}/connect`, upstream.url], { cwd: ROOT });
  closers.unshift(() => agent.stop());
  await agent.waitFor(/FLOOR_AGENT_READY/, 30_000);

  const targets: Target[] = [
    {
      label: "floor: the same hops, no work (bench/floor)",
      client: (n) => new HttpLoadClient({ baseURL: `${url}/v1`, headers: {}, model: "synthetic" }, n, 30_000),
      workerd: floorWorkerd,
      agent: [agent.pid],
      slices: [],
      workerdMs: 0,
      agentMs: 0,
    },
    { label: "Sluice full path (openai-upstream)", client: (n) => sluice.client(n, 30_000), workerd: sluice.gatewayPids(), agent: sluice.agentPids?.() ?? [], slices: [], workerdMs: 0, agentMs: 0 },
  ];
  const body = (i: number): ChatBody => ({ max_tokens: SMALL.maxTokens, stream: false, seed: i, temperature: 0.7 });
  for (let turn = 0; turn < TURNS; turn++) {
    for (const t of turn % 2 === 0 ? targets : [...targets].reverse()) {
      const client = t.client(SMALL.concurrency);
      try {
        const load = { concurrency: SMALL.concurrency, maxRequests: SMALL.maxRequests };
        if (turn === 0) await runLoad({ ...load, durationMs: SMALL.warmupMs }, (i) => client.complete(body(i)));
        const w = totalCpuMs(t.workerd);
        const a = totalCpuMs(t.agent);
        t.slices.push(await runLoad({ ...load, durationMs: SLICE_MS }, (i) => client.complete(body(i))));
        t.workerdMs += totalCpuMs(t.workerd) - w;
        t.agentMs += totalCpuMs(t.agent) - a;
      } finally {
        client.close();
      }
    }
  }
  const rows = targets.map((t) => ({ t, load: combineLoads(t.slices) }));
  const perRequest = (ms: number, load: LoadResult) => ms / Math.max(1, load.requests);
  console.log(`\nSmall non-streaming requests (max_tokens ${SMALL.maxTokens}), concurrency ${SMALL.concurrency}, ${TURNS} slices of ${SLICE_MS / 1000} s each in turns:\n`);
  console.log("| target | req/s | p50 ms | p99 ms | errors | workerd CPU ms/request | agent CPU ms/request |");
  console.log("| ------ | ----: | -----: | -----: | -----: | ---------------------: | -------------------: |");
  for (const { t, load } of rows) {
    console.log(
      `| ${t.label} | ${Math.round(load.rps).toLocaleString("en-US")} | ${load.latencyP50.toFixed(2)} | ${load.latencyP99.toFixed(1)} | ${load.errors}/${load.requests} | ${perRequest(t.workerdMs, load).toFixed(3)} | ${perRequest(t.agentMs, load).toFixed(3)} |`,
    );
  }
  const [floor, full] = rows as [(typeof rows)[0], (typeof rows)[0]];
  const floorMs = perRequest(floor.t.workerdMs, floor.load);
  const fullMs = perRequest(full.t.workerdMs, full.load);
  console.log(
    `\nSluice's own work in workerd: +${(fullMs - floorMs).toFixed(3)} ms per request (${Math.round((100 * (fullMs - floorMs)) / fullMs)}% of its workerd CPU);` +
      ` Sluice serves ${(full.load.rps / floor.load.rps).toFixed(2)}x the floor's requests/s.`,
  );
} finally {
  for (const close of closers) await close().catch(() => undefined);
}
