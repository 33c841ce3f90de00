import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { AgentConfigFile } from "../../miner-agent/config.ts";
import type { EngineConfig } from "../../miner-agent/engines/types.ts";
import { writeMinerKey, type SeedMiner } from "../../scripts/lib/seed.ts";
import { AGENT_BIN, TINY_MODEL } from "./paths.ts";

export type AgentLog = { event: string } & Record<string, unknown>;

export interface AgentProcess {
  child: ChildProcess;
  logs: AgentLog[];
  /** Resolves with the first log line (past or future) matching `pred`. */
  waitFor(pred: (l: AgentLog) => boolean, timeoutMs?: number): Promise<AgentLog>;
  kill(signal?: NodeJS.Signals): void;
  exited: Promise<number | null>;
  /** The agent's config file (its status file is beside it). */
  configPath: string;
}

export interface AgentOptions {
  gateway: string;
  /** The seeded miner whose hotkey the agent uses. */
  miner: SeedMiner;
  chute?: string;
  instanceId?: string;
  engine?: EngineConfig;
  /** Serve no configured chute (an agent that only takes deploy offers). */
  noChutes?: boolean;
  /** The config's deploy section and GPU inventory (declared; default none). */
  deploy?: AgentConfigFile["deploy"];
  gpus?: AgentConfigFile["gpus"];
  /** Agent heartbeat interval (ms); the agent's default when unset. */
  heartbeatMs?: number;
  drainTimeoutMs?: number;
}

export function tinyEngine(parallel = 4, contextSize = 2048): EngineConfig {
  return { kind: "llama-cpp", modelPath: TINY_MODEL, parallel, contextSize, threads: 1 };
}

/** Starts a real `sluice-miner run` process and waits until the gateway accepted it. */
export async function startAgent(opts: AgentOptions): Promise<AgentProcess> {
  const agent = await spawnAgent(opts);
  try {
    await agent.waitFor((l) => l.event === "gateway.connected");
  } catch (err) {
    agent.kill();
    throw err;
  }
  return agent;
}

/** Starts a real `sluice-miner run` process. */
export async function spawnAgent(opts: AgentOptions): Promise<AgentProcess> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-agent-"));
  await writeMinerKey(join(dir, "hotkey.json"), opts.miner);
  const config = {
    gateway: opts.gateway,
    hotkeyFile: "hotkey.json",
    gpus: opts.gpus ?? [],
    drainTimeoutMs: opts.drainTimeoutMs ?? 20_000,
    ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
    ...(opts.deploy ? { deploy: opts.deploy } : {}),
    chutes: opts.noChutes ? [] : [{ chute: opts.chute ?? "sluice/tiny-chat", instanceId: opts.instanceId, engine: opts.engine ?? tinyEngine() }],
  };
  const path = join(dir, "agent.json");
  await writeFile(path, JSON.stringify(config));
  const child = spawn(process.execPath, [AGENT_BIN, "run", "--config", path], { stdio: ["ignore", "pipe", "pipe"] });
  const logs: AgentLog[] = [];
  const waiters: { pred: (l: AgentLog) => boolean; resolve: (l: AgentLog) => void }[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    let entry: AgentLog;
    try {
      entry = JSON.parse(line) as AgentLog;
    } catch {
      return;
    }
    logs.push(entry);
    for (const w of [...waiters]) {
      if (w.pred(entry)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(entry);
      }
    }
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const waitFor = (pred: (l: AgentLog) => boolean, timeoutMs = 30_000) => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<AgentLog>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`agent ${opts.miner.name}: no matching log in ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`)),
        timeoutMs,
      );
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  };
  return { child, logs, waitFor, kill: (s = "SIGKILL") => void child.kill(s), exited, configPath: path };
}
