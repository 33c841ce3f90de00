import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import type { EngineConfig } from "../../miner-agent/engines/types.ts";
import { migrationStatements } from "../../scripts/lib/migrations.ts";
import { makeSeed, seedStatements, type SeedChute, writeMinerKey } from "../../scripts/lib/seed.ts";
import { gatewayWorkerOptions, TEST_SECRETS } from "../../test/support/gateway.ts";
import { AGENT_BIN, ROOT } from "../../test/support/paths.ts";
import { HttpLoadClient } from "../load/http-client.ts";
import { commandName, descendants, statusBytes } from "../proc.ts";
import { ManagedChild } from "./child.ts";
import { freePort } from "./net.ts";
import { WorkerdProfiler } from "../cpu-profile.ts";
import type { RunningTarget } from "./types.ts";

export interface SluiceOptions {
  chute: SeedChute;
  engine: EngineConfig;
  /** Credit of the benchmark account, in USD (enough for the whole run). */
  creditUsd: number;
  /**
   * Profile (`--cpu-prof`): open workerd's inspector for the gateway's isolates, and run the agent
   * with Node's `--cpu-prof` writing into this directory.
   */
  cpuProfDir?: string;
}

/** The chute served by the agent's `openai-upstream` engine (the same synthetic upstream as the peers). */
export const SYNTHETIC_CHUTE: SeedChute = {
  id: "chute-bench-synthetic",
  name: "bench/synthetic",
  modelRef: "synthetic",
  engine: "openai-upstream",
  contextLength: 8192,
  maxOutputTokens: 1024,
  promptPriceNanoPerM: 100_000_000,
  completionPriceNanoPerM: 400_000_000,
  concurrency: 64,
};

/**
 * Per-key rate limits stay on (their cost is part of the path) but far above what a run sends;
 * the platform's defaults would otherwise turn most of the load into 429s.
 */
const BENCH_VARS = { RATE_LIMIT_RPM: "1000000000", RATE_LIMIT_TPM: "1000000000000" };

/** The first few lines of the gateway's output that are not its routine info logs. */
class UnusualLines {
  readonly lines: string[] = [];

  /** A line splitter for one output stream. */
  reader(): (text: string) => void {
    let partial = "";
    return (text) => {
      if (this.lines.length >= 4) return;
      const parts = (partial + text).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        const routine = line === "" || (line.startsWith("{") && line.includes('"level":"info"'));
        if (!routine && this.lines.length < 4) this.lines.push(line.length > 240 ? `${line.slice(0, 240)}...` : line);
      }
    };
  }
}

interface RouterSnapshot {
  instances: { instanceId: string }[];
}

async function waitForInstance(mf: Miniflare, chuteId: string, timeoutMs: number): Promise<void> {
  const ns = await mf.getDurableObjectNamespace("CHUTE_ROUTER");
  // Miniflare proxies RPC to the Durable Object; its types only describe fetch().
  const router = ns.get(ns.idFromName(chuteId)) as unknown as { snapshot(): Promise<RouterSnapshot> };
  const deadline = Date.now() + timeoutMs;
  while ((await router.snapshot()).instances.length === 0) {
    if (Date.now() > deadline) throw new Error(`no instance of ${chuteId} reached the router within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The full Sluice path: the wrangler-built Worker bundle in workerd through Miniflare (no
 * `wrangler dev` proxy in front), an in-memory D1 migrated and seeded with a funded account,
 * and a real `sluice-miner` process serving the chute with `engine`.
 */
export async function startSluice(opts: SluiceOptions): Promise<RunningTarget> {
  const seed = makeSeed({ chutes: [opts.chute], creditUsd: opts.creditUsd });
  const persist = await mkdtemp(join(tmpdir(), "sluice-bench-gw-"));
  const unusual = new UnusualLines();
  const inspectorPort = opts.cpuProfDir ? await freePort() : undefined;
  const mf = new Miniflare({
    ...(inspectorPort ? { inspectorPort } : {}),
    ...gatewayWorkerOptions({ ...TEST_SECRETS, ...BENCH_VARS }),
    // The gateway logs a line per request: only warnings, errors and non-JSON lines are kept.
    handleRuntimeStdio(stdout, stderr) {
      const out = unusual.reader();
      const err = unusual.reader();
      stdout.on("data", (d: Buffer) => out(d.toString("utf8")));
      stderr.on("data", (d: Buffer) => err(d.toString("utf8")));
    },
    // On disk, as the tests and `npm start` run it.
    d1Persist: `${persist}/d1`,
    durableObjectsPersist: `${persist}/do`,
  });
  let agent: ManagedChild | undefined;
  const close = async (): Promise<void> => {
    await agent?.stop();
    await mf.dispose();
    await rm(persist, { recursive: true, force: true });
  };
  try {
    const url = (await mf.ready).toString().replace(/\/$/, "");
    const db = await mf.getD1Database("DB");
    const statements = [...(await migrationStatements(`${ROOT}/migrations`)), ...seedStatements(seed)];
    await db.batch(statements.map((s) => db.prepare(s)));
    const workerd = descendants(process.pid).filter((pid) => commandName(pid) === "workerd");
    if (workerd.length === 0) throw new Error("cannot find the workerd process Miniflare started");

    const miner = seed.miners[0]!;
    // Under `persist`, so close() removes it (the agent writes its status file there while it runs).
    const dir = join(persist, "agent");
    await mkdir(dir);
    const configPath = join(dir, "agent.json");
    await writeMinerKey(join(dir, "hotkey.json"), miner);
    await writeFile(configPath, JSON.stringify({
      gateway: url,
      hotkeyFile: "hotkey.json",
      gpus: [],
      chutes: [{ chute: opts.chute.name, engine: opts.engine }],
    }));
    const nodeFlags = opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
    agent = new ManagedChild("sluice-miner", process.execPath, [...nodeFlags, AGENT_BIN, "run", "--config", configPath], { cwd: ROOT });
    await agent.waitFor(/"event":"gateway\.connected"/, 60_000);
    await waitForInstance(mf, opts.chute.id, 15_000);

    const endpoint = { baseURL: `${url}/v1`, headers: { authorization: `Bearer ${seed.apiKey}` }, model: opts.chute.name };
    const agentPid = agent.pid;
    return {
      client: (n, timeoutMs) => new HttpLoadClient(endpoint, n, timeoutMs),
      gatewayPids: () => workerd,
      // Miniflare's own service isolates (its entry router, cache, loopback) are left out; D1's is kept.
      ...(inspectorPort ? { profiler: new WorkerdProfiler(inspectorPort, (id) => !id.startsWith("core:user") && !id.startsWith("d1:") && id !== "core:entry") } : {}),
      agentPids: () => [agentPid],
      notes: () => {
        const agentMiB = (statusBytes(agentPid, "VmHWM") / 2 ** 20).toFixed(0);
        return [
          `the sluice-miner agent (a separate process, not counted in the gateway RSS) peaked at ${agentMiB} MiB`,
          ...unusual.lines.map((l) => `gateway (workerd) printed: ${l}`),
        ];
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
