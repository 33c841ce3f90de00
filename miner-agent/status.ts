import { readFile, rename, writeFile } from "node:fs/promises";
import type { Gpu } from "../protocol/index.ts";

/**
 * What a running agent reports about itself, written to its status file (atomically, every
 * few seconds and on changes) for `sluice-miner status`.
 */
export interface InstanceStatus {
  instanceId: string;
  chute: string;
  engine: string;
  /** Launched on a deploy offer (the gateway may undeploy it). */
  managed: boolean;
  capacity: number;
  inflight: number;
  draining: boolean;
  gpus: number[];
  requestsServed: number;
  tokensServed: number;
}

export interface AgentStatus {
  pid: number;
  hotkey: string;
  gateway: string;
  connected: boolean;
  draining: boolean;
  startedAt: string;
  updatedAt: string;
  gpus: Gpu[];
  instances: InstanceStatus[];
  /** Deploy offers being launched. */
  deploying: { offerId: string; chute: string; since: string }[];
  inflight: number;
  requestsServed: number;
  tokensServed: number;
}

let writes = 0;

export async function writeStatusFile(path: string, status: AgentStatus): Promise<void> {
  const tmp = `${path}.${process.pid}.${++writes}.tmp`;
  await writeFile(tmp, JSON.stringify(status, null, 2) + "\n", { mode: 0o644 });
  await rename(tmp, path);
}

export async function readStatusFile(path: string): Promise<AgentStatus | null> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as AgentStatus;
  } catch {
    return null;
  }
}
