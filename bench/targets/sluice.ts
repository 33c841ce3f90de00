import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { EngineConfig } from "../../miner-agent/engines/types.ts";
import { makeSeed, type SeedChute, writeMinerKey } from "../../scripts/lib/seed.ts";
import { AGENT_BIN, ROOT } from "../../test/support/paths.ts";
import { HttpLoadClient } from "../load/http-client.ts";
import { statusBytes } from "../proc.ts";
import { ManagedChild } from "./child.ts";
import { startBenchGateway, waitForInstances } from "./gateway.ts";
import { freePort } from "./net.ts";
import { WorkerdProfiler } from "../cpu-profile.ts";
import type { RunningTarget } from "./types.ts";

/** A chute and the engine the agent serves it with. */
export interface ServedChute {
  chute: SeedChute;
  engine: EngineConfig;
}

export interface SluiceOptions extends ServedChute {
  /** A second chute the same agent serves, called by the target's pacedClient (the paced phase). */
  paced?: ServedChute;
  /** Credit of the benchmark account, in USD (enough for the whole run). */
  creditUsd: number;
  /** The gateway bundle to run (default: the working tree's build, .build/worker). */
  workerBundle?: string;
  /** The agent to run (default: the working tree's, miner-agent/bin/sluice-miner.mjs). */
  agentBin?: string;
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

/** The same chute, served from the paced synthetic upstream (the paced phase). */
export const PACED_CHUTE: SeedChute = { ...SYNTHETIC_CHUTE, id: "chute-bench-synthetic-paced", name: "bench/synthetic-paced" };

/** The agent's `openai-upstream` engine on a synthetic upstream (its base URL ends in /v1). */
export function syntheticEngine(baseURL: string): EngineConfig {
  return { kind: "openai-upstream", baseURL, model: "synthetic", parallel: SYNTHETIC_CHUTE.concurrency };
}

/**
 * The full Sluice path: the wrangler-built Worker bundle in workerd through Miniflare (no
 * `wrangler dev` proxy in front), an in-memory D1 migrated and seeded with a funded account,
 * and a real `sluice-miner` process serving the chute with `engine`.
 */
export async function startSluice(opts: SluiceOptions): Promise<RunningTarget> {
  const served: ServedChute[] = [opts, ...(opts.paced ? [opts.paced] : [])];
  const seed = makeSeed({ chutes: served.map((c) => c.chute), creditUsd: opts.creditUsd });
  const inspectorPort = opts.cpuProfDir ? await freePort() : undefined;
  const gateway = await startBenchGateway({ seed, ...(inspectorPort ? { inspectorPort } : {}), ...(opts.workerBundle ? { scriptPath: opts.workerBundle } : {}) });
  const { url, workerd } = gateway;
  let agent: ManagedChild | undefined;
  const close = async (): Promise<void> => {
    await agent?.stop();
    await gateway.close();
  };
  try {
    const miner = seed.miners[0]!;
    // Under the gateway's directory, so close() removes it (the agent writes its status file there while it runs).
    const dir = join(gateway.dir, "agent");
    await mkdir(dir);
    const configPath = join(dir, "agent.json");
    await writeMinerKey(join(dir, "hotkey.json"), miner);
    await writeFile(configPath, JSON.stringify({
      gateway: url,
      hotkeyFile: "hotkey.json",
      gpus: [],
      chutes: served.map((c) => ({ chute: c.chute.name, engine: c.engine })),
    }));
    const nodeFlags = opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
    agent = new ManagedChild("sluice-miner", process.execPath, [...nodeFlags, opts.agentBin ?? AGENT_BIN, "run", "--config", configPath], { cwd: ROOT });
    await agent.waitFor(/"event":"gateway\.connected"/, 60_000);
    for (const c of served) await waitForInstances(gateway, seed.apiKey, c.chute.id, 1, 15_000);

    const endpoint = (chute: SeedChute) => ({ baseURL: `${url}/v1`, headers: { authorization: `Bearer ${seed.apiKey}` }, model: chute.name });
    const { paced } = opts;
    const agentPid = agent.pid;
    return {
      client: (n, timeoutMs) => new HttpLoadClient(endpoint(opts.chute), n, timeoutMs),
      ...(paced ? { pacedClient: (n: number, timeoutMs: number) => new HttpLoadClient(endpoint(paced.chute), n, timeoutMs) } : {}),
      gatewayPids: () => workerd,
      // Miniflare's own service isolates (its entry router, cache, loopback) are left out; D1's is kept.
      ...(inspectorPort ? { profiler: new WorkerdProfiler(inspectorPort, (id) => !id.startsWith("core:user") && !id.startsWith("d1:") && id !== "core:entry") } : {}),
      agentPids: () => [agentPid],
      notes: () => {
        const agentMiB = (statusBytes(agentPid, "VmHWM") / 2 ** 20).toFixed(0);
        return [
          `the sluice-miner agent (a separate process, not counted in the gateway RSS) peaked at ${agentMiB} MiB`,
          ...gateway.unusualLines().map((l) => `gateway (workerd) printed: ${l}`),
        ];
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
