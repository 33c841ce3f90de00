import { readFile, rename, writeFile } from "node:fs/promises";
import { z } from "zod";
import { Gpu } from "../protocol/index.ts";

/**
 * What a running agent reports about itself, written to its status file (atomically, every
 * few seconds and on changes) for `sluice-miner status`.
 */
const count = z.int().nonnegative();

export const InstanceStatus = z.object({
  instanceId: z.string(),
  chute: z.string(),
  engine: z.string(),
  /** Launched on a deploy offer (the gateway may undeploy it). */
  managed: z.boolean(),
  capacity: count,
  inflight: count,
  draining: z.boolean(),
  gpus: z.array(z.int().nonnegative()),
  requestsServed: count,
  tokensServed: count,
});
export type InstanceStatus = z.infer<typeof InstanceStatus>;

export const AgentStatus = z.object({
  pid: z.int().positive(),
  hotkey: z.string(),
  gateway: z.string(),
  connected: z.boolean(),
  draining: z.boolean(),
  startedAt: z.iso.datetime(),
  updatedAt: z.iso.datetime(),
  gpus: z.array(Gpu),
  instances: z.array(InstanceStatus),
  /** Deploy offers being launched. */
  deploying: z.array(z.object({ offerId: z.string(), chute: z.string(), since: z.iso.datetime() })),
  inflight: count,
  requestsServed: count,
  tokensServed: count,
});
export type AgentStatus = z.infer<typeof AgentStatus>;

let writes = 0;

export async function writeStatusFile(path: string, status: AgentStatus): Promise<void> {
  const tmp = `${path}.${process.pid}.${++writes}.tmp`;
  await writeFile(tmp, JSON.stringify(status, null, 2) + "\n", { mode: 0o644 });
  await rename(tmp, path);
}

/** The status a running agent wrote; null when there is no such file. Throws when it is not a status file. */
export async function readStatusFile(path: string): Promise<AgentStatus | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`Status file ${path} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = AgentStatus.safeParse(json);
  if (!parsed.success) throw new Error(`Status file ${path} is not an agent status:\n${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
