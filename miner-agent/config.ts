import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { z } from "zod";
import { Gpu, type ChuteEngineKind } from "../protocol/index.ts";
import type { EngineConfig } from "./engines/types.ts";

/**
 * The agent's config file (JSON; `sluice-miner init` writes a commented example as JSONC).
 * Paths inside are relative to the file.
 */
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
/** An OpenAI-compatible server the agent launches itself, e.g. `vllm serve {model} --port {port}`. */
const CommandFields = {
  /**
   * The command line, split on whitespace (no shell). Placeholders: {model}, {port},
   * {context} (context length), {gpus} (comma-separated GPU indices; also in CUDA_VISIBLE_DEVICES).
   */
  command: z.string().min(1).max(4096),
  /** Path polled (GET, expecting 2xx) until the server is up, before the instance is announced. */
  healthPath: z.string().startsWith("/").default("/health"),
  /** How long the server may take to come up (model download and load). */
  startupTimeoutMs: z.int().positive().default(600_000),
  parallel: z.int().positive().max(1024).default(16),
  /** Extra environment for the process. */
  env: z.record(z.string(), z.string()).default({}),
};
const Command = z.object({
  kind: z.literal("command"),
  /** The model name substituted for {model} and sent upstream. */
  model: z.string().min(1),
  /** The context length substituted for {context}. */
  contextLength: z.int().positive().optional(),
  /** Fixed port; by default a free one is picked. */
  port: z.int().min(1).max(65535).optional(),
  ...CommandFields,
});

const EngineSchema = z.discriminatedUnion("kind", [LlamaCpp, OpenAIUpstream, Command]);

/** How this agent launches instances the gateway's scaler offers, per chute engine kind. */
const Deploy = z.object({
  /** At most this many offered instances at once. */
  maxInstances: z.int().positive().max(64).default(4),
  engines: z
    .object({
      /** Chutes with engine llama-cpp: their modelRef is a GGUF file under modelDir. */
      "llama-cpp": z
        .object({
          modelDir: z.string().min(1),
          parallel: z.int().positive().max(256).optional(),
          threads: z.int().positive().optional(),
          gpu: z.union([z.literal("auto"), z.literal(false)]).optional(),
        })
        .optional(),
      vllm: z.object(CommandFields).optional(),
      sglang: z.object(CommandFields).optional(),
    })
    .refine((e) => Object.values(e).some((v) => v !== undefined), "name at least one engine"),
});

export const AgentConfig = z.object({
  /** Gateway base URL, e.g. http://127.0.0.1:8787 or https://api.sluice.dev */
  gateway: z.url(),
  /** The hotkey file `sluice-miner init` wrote (0600). The hotkey's SS58 address is the miner's id. */
  hotkeyFile: z.string().min(1),
  /** The host's GPUs: "auto" asks nvidia-smi (none when it is absent), or declare them. */
  gpus: z.union([z.literal("auto"), z.array(Gpu)]).default("auto"),
  /** Chutes this miner always serves, each with its engine. */
  chutes: z
    .array(
      z.object({
        /** Chute name as clients call it, e.g. `sluice/tiny-chat`. */
        chute: z.string().min(1),
        /** Stable id for this instance; defaults to `<hotkey>:<chute>`. */
        instanceId: z.string().min(1).max(128).optional(),
        /** Indices of the GPUs this instance uses (so offers do not count them free). */
        gpus: z.array(z.int().nonnegative()).default([]),
        engine: EngineSchema,
      }),
    )
    .default([]),
  /** Take deploy offers from the gateway's scaler (absent = only the chutes above). */
  deploy: Deploy.optional(),
  /** Drain: how long SIGTERM waits for in-flight jobs before exiting anyway. */
  drainTimeoutMs: z.int().positive().default(120_000),
  /**
   * Heartbeat interval. The gateway evicts an agent it has not heard from for a while
   * (MINER_STALE_AFTER_MS, 35 s by default), so keep this well below that.
   */
  heartbeatMs: z.int().min(100).max(15_000).default(10_000),
  /** Where the running agent writes its state for `sluice-miner status`; default next to the config. */
  statusFile: z.string().optional(),
});
export type AgentConfig = z.infer<typeof AgentConfig>;
/** The config as written in the file (defaults not yet applied). */
export type AgentConfigFile = z.input<typeof AgentConfig>;

export interface ResolvedInstance {
  chute: string;
  instanceId?: string;
  gpus: number[];
  engine: EngineConfig;
}

export type DeployEngines = NonNullable<AgentConfig["deploy"]>["engines"];

export interface ResolvedConfig {
  gateway: string;
  /** Absolute path of the hotkey file. */
  hotkeyFile: string;
  gpus: "auto" | Gpu[];
  drainTimeoutMs: number;
  heartbeatMs: number;
  statusFile: string;
  instances: ResolvedInstance[];
  deploy: { maxInstances: number; engines: DeployEngines } | undefined;
}

/** Deploy offers the agent can take, by chute engine kind. */
export function deployableEngines(config: ResolvedConfig): ChuteEngineKind[] {
  const engines = config.deploy?.engines ?? {};
  return (Object.keys(engines) as (keyof DeployEngines)[]).filter((k) => engines[k] !== undefined);
}

/** Strip `//` and `/* *\/` comments (outside strings) so the config may be JSONC. */
export function stripJsonComments(text: string): string {
  return text.replace(/("(?:\\.|[^"\\])*")|\/\/[^\n]*|\/\*[\s\S]*?\*\//g, (_m, str: string | undefined) => str ?? "");
}

export function parseConfig(text: string, path: string): ResolvedConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stripJsonComments(text));
  } catch (err) {
    throw new Error(`Config ${path} is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = AgentConfig.safeParse(raw);
  if (!parsed.success) throw new Error(`Invalid config ${path}:\n${z.prettifyError(parsed.error)}`);
  const cfg = parsed.data;
  const base = dirname(resolve(path));
  const llama = cfg.deploy?.engines["llama-cpp"];
  return {
    gateway: cfg.gateway,
    hotkeyFile: resolve(base, cfg.hotkeyFile),
    gpus: cfg.gpus,
    drainTimeoutMs: cfg.drainTimeoutMs,
    heartbeatMs: cfg.heartbeatMs,
    statusFile: resolve(base, cfg.statusFile ?? "sluice-miner.status.json"),
    instances: cfg.chutes.map((c) => ({
      chute: c.chute,
      ...(c.instanceId ? { instanceId: c.instanceId } : {}),
      gpus: c.gpus,
      engine:
        c.engine.kind === "llama-cpp"
          ? { ...c.engine, modelPath: resolve(base, c.engine.modelPath) }
          : c.engine.kind === "command"
            ? { ...c.engine, gpus: c.gpus }
            : c.engine,
    })),
    deploy: cfg.deploy
      ? {
          maxInstances: cfg.deploy.maxInstances,
          engines: { ...cfg.deploy.engines, ...(llama ? { "llama-cpp": { ...llama, modelDir: resolve(base, llama.modelDir) } } : {}) },
        }
      : undefined,
  };
}

export async function loadConfig(path: string): Promise<ResolvedConfig> {
  return parseConfig(await readFile(path, "utf8"), path);
}
