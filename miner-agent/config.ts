import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { z } from "zod";
import type { EngineConfig } from "./engines/types.ts";

/** The agent's config file (JSON). Paths inside are relative to the file. */
const LlamaCpp = z.object({
  kind: z.literal("llama-cpp"),
  modelPath: z.string().min(1),
  parallel: z.int().positive().max(256).default(4),
  contextSize: z.int().positive().default(2048),
  threads: z.int().positive().optional(),
  gpu: z.union([z.literal("auto"), z.literal(false)]).optional(),
});
const OpenAIUpstream = z.object({
  kind: z.literal("openai-upstream"),
  baseURL: z.url(),
  model: z.string().min(1),
  apiKey: z.string().optional(),
  parallel: z.int().positive().max(1024).default(16),
  idleTimeoutMs: z.int().positive().optional(),
});

export const AgentConfig = z.object({
  /** Gateway base URL, e.g. http://127.0.0.1:8787 or https://api.sluice.dev */
  gateway: z.url(),
  minerId: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
  /** The miner's secret token, or a file holding it. */
  token: z.string().min(16).optional(),
  tokenFile: z.string().optional(),
  chutes: z
    .array(
      z.object({
        /** Chute name as clients call it, e.g. `sluice/tiny-chat`. */
        chute: z.string().min(1),
        /** Stable id for this instance; defaults to `<minerId>:<chute>`. */
        instanceId: z.string().min(1).max(128).optional(),
        engine: z.discriminatedUnion("kind", [LlamaCpp, OpenAIUpstream]),
      }),
    )
    .min(1),
  /** Drain: how long SIGTERM waits for in-flight jobs before exiting anyway. */
  drainTimeoutMs: z.int().positive().default(120_000),
  /**
   * Heartbeat interval. The gateway evicts an agent it has not heard from for a while
   * (MINER_STALE_AFTER_MS, 35 s by default), so keep this well below that.
   */
  heartbeatMs: z.int().min(100).max(15_000).default(10_000),
});
export type AgentConfig = z.infer<typeof AgentConfig>;

export interface ResolvedInstance {
  chute: string;
  instanceId: string;
  engine: EngineConfig;
}

export interface ResolvedConfig {
  gateway: string;
  minerId: string;
  token: string;
  drainTimeoutMs: number;
  heartbeatMs: number;
  instances: ResolvedInstance[];
}

export async function loadConfig(path: string): Promise<ResolvedConfig> {
  const raw: unknown = JSON.parse(await readFile(path, "utf8"));
  const parsed = AgentConfig.safeParse(raw);
  if (!parsed.success) throw new Error(`Invalid config ${path}:\n${z.prettifyError(parsed.error)}`);
  const cfg = parsed.data;
  const base = dirname(resolve(path));
  const token = cfg.token ?? (cfg.tokenFile ? (await readFile(resolve(base, cfg.tokenFile), "utf8")).trim() : undefined);
  if (!token) throw new Error(`Config ${path} needs "token" or "tokenFile".`);
  return {
    gateway: cfg.gateway,
    minerId: cfg.minerId,
    token,
    drainTimeoutMs: cfg.drainTimeoutMs,
    heartbeatMs: cfg.heartbeatMs,
    instances: cfg.chutes.map((c) => ({
      chute: c.chute,
      instanceId: c.instanceId ?? `${cfg.minerId}:${c.chute}`,
      engine: c.engine.kind === "llama-cpp" ? { ...c.engine, modelPath: resolve(base, c.engine.modelPath) } : c.engine,
    })),
  };
}
