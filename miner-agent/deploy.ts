import { access } from "node:fs/promises";
import { isAbsolute, relative, resolve } from "node:path";
import { pickGpus, type DeploySpec, type Gpu } from "../protocol/index.ts";
import type { DeployEngines } from "./config.ts";
import type { EngineConfig } from "./engines/types.ts";

/**
 * Deciding on a deploy offer: does this host have the engine and free GPUs the chute needs,
 * and what engine config launches it. Pure except for checking that a model file exists.
 */

export type OfferDecision = { ok: true; gpus: number[]; engine: EngineConfig } | { ok: false; reason: string };

export async function decideOffer(
  spec: DeploySpec,
  engines: DeployEngines | undefined,
  inventory: Gpu[],
  used: ReadonlySet<number>,
): Promise<OfferDecision> {
  // The model reference becomes a command-line argument: never let it read as an option.
  if (!/^[A-Za-z0-9_][A-Za-z0-9._/:@+-]*$/.test(spec.modelRef)) return { ok: false, reason: "the model reference is not a plain model name" };
  const gpus = pickGpus(spec.gpu, inventory, used);
  if (!gpus) {
    return { ok: false, reason: `needs ${spec.gpu.count} free GPU(s) with ${spec.gpu.minVramMb} MiB${spec.gpu.types.length ? ` of type ${spec.gpu.types.join("/")}` : ""}` };
  }
  switch (spec.engine) {
    case "llama-cpp": {
      const cfg = engines?.["llama-cpp"];
      if (!cfg) return { ok: false, reason: "this agent does not launch llama-cpp chutes" };
      const modelPath = resolve(cfg.modelDir, spec.modelRef);
      const rel = relative(cfg.modelDir, modelPath);
      if (rel.startsWith("..") || isAbsolute(rel)) return { ok: false, reason: "the model reference leaves the model directory" };
      try {
        await access(modelPath);
      } catch {
        return { ok: false, reason: `model ${spec.modelRef} is not in ${cfg.modelDir}` };
      }
      return {
        ok: true,
        gpus,
        engine: {
          kind: "llama-cpp",
          modelPath,
          parallel: Math.min(spec.concurrency, cfg.parallel ?? spec.concurrency),
          contextSize: spec.contextLength,
          ...(cfg.threads ? { threads: cfg.threads } : {}),
          ...(cfg.gpu !== undefined ? { gpu: cfg.gpu } : gpus.length === 0 ? { gpu: false as const } : {}),
        },
      };
    }
    case "vllm":
    case "sglang": {
      const cfg = engines?.[spec.engine];
      if (!cfg) return { ok: false, reason: `this agent does not launch ${spec.engine} chutes` };
      return {
        ok: true,
        gpus,
        engine: {
          kind: "command",
          command: cfg.command,
          model: spec.modelRef,
          healthPath: cfg.healthPath,
          startupTimeoutMs: cfg.startupTimeoutMs,
          parallel: Math.min(spec.concurrency, cfg.parallel),
          env: cfg.env,
          contextLength: spec.contextLength,
          gpus,
        },
      };
    }
    case "openai-upstream":
      return { ok: false, reason: "openai-upstream chutes are served only by agents configured for them" };
  }
}
