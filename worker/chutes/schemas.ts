import { z } from "zod";
import { CHUTE_ENGINES } from "../db/schema.ts";
import { parseUsdPerToken } from "./pricing.ts";

/**
 * Request bodies of the chutes API (`/v1/chutes`), snake_case like OpenAI's. Strict: a misspelt
 * field is a 400 naming it, never silently ignored.
 *
 * Prices are USD per token as exact decimal strings, the unit `/v1/models` lists them in
 * (`"0.0000001"` is $0.10 per million tokens); they are stored as integer nano-USD per million
 * tokens, so a price has at most 15 decimal places. GPU memory is MiB, as `nvidia-smi` and the
 * miner agent report it (an "80GB" H100 has 81559 MiB).
 */

/** `org/model`: lowercase letters, digits, `.`, `_` and `-`, each part starting with a letter or digit. */
export const CHUTE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}\/[a-z0-9][a-z0-9._-]{0,127}$/;
const NAME_HINT = "an 'org/model' name of lowercase letters, digits, '.', '_' and '-' (e.g. 'acme/qwen3-8b')";

export const MAX_INSTANCES = 100;
export const MAX_CONCURRENCY = 1024;
export const MAX_CONTEXT_LENGTH = 2_097_152;
export const MAX_GPU_COUNT = 64;
/** max_output_tokens when a chute is created without it (capped by its context length). */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

const USD_PER_TOKEN_HINT = 'a USD-per-token decimal string with at most 15 decimal places, e.g. "0.0000001" ($0.10 per million tokens)';

const price = z.string({ error: `expected ${USD_PER_TOKEN_HINT}` }).transform((v, ctx) => {
  const nano = parseUsdPerToken(v);
  if (nano === null) {
    ctx.issues.push({ code: "custom", message: `expected ${USD_PER_TOKEN_HINT}`, input: v });
    return z.NEVER;
  }
  return nano;
});

const Pricing = z.strictObject({
  prompt: price,
  completion: price,
  /** Price of prompt tokens the engine served from its prefix cache; null or omitted = the prompt price. */
  input_cache_read: price.nullable().optional(),
});

const GpuType = z
  .string()
  .trim()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9 ._-]+$/, "letters, digits, spaces, '.', '_' and '-' only");

const Gpu = z.strictObject({
  /** GPUs per instance; 0 runs on CPU. */
  count: z.int().min(0).max(MAX_GPU_COUNT),
  /** Memory of each GPU, MiB. */
  min_vram_mb: z.int().min(0).max(16 * 1024 * 1024).default(0),
  /** Allowed GPU model substrings, matched case-insensitively against the driver's name (e.g. "h100"); empty = any. */
  types: z.array(GpuType).max(32).default([]),
});

const Metadata = {
  display_name: z.string().trim().min(1).max(200).nullable().optional(),
  description: z.string().max(4000).optional(),
  hugging_face_id: z
    .string()
    .max(128)
    .regex(/^[\w.-]+\/[\w.-]+$/, "a Hugging Face repository id, e.g. 'Qwen/Qwen3-8B'")
    .nullable()
    .optional(),
  quantization: z.enum(["int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown"]).optional(),
  deprecation_date: z.iso.date().nullable().optional(),
};

const Scaling = {
  concurrency: z.int().min(1).max(MAX_CONCURRENCY),
  min_instances: z.int().min(0).max(MAX_INSTANCES),
  max_instances: z.int().min(1).max(MAX_INSTANCES),
};

/** A Hugging Face id (`org/name`, optionally `@revision`), a GGUF file name, or an upstream's model name. */
export const MODEL_REF = /^[A-Za-z0-9_][A-Za-z0-9._/:@+-]*$/;

export const CreateChuteBody = z
  .strictObject({
    name: z.string({ error: `expected ${NAME_HINT}` }).regex(CHUTE_NAME, `expected ${NAME_HINT}`),
    /** What the engine loads: a Hugging Face id, a GGUF path or URL, the upstream's model name. */
    // Miners substitute it into their engine's command line (e.g. `vllm serve {model}`): it can
    // never be read as an option (no leading '-') or carry anything but a model reference.
    model_ref: z
      .string()
      .min(1)
      .max(512)
      .regex(MODEL_REF, "a model reference: letters, digits and . _ - / : @ +, not starting with '-' or '.'"),
    engine: z.enum(CHUTE_ENGINES),
    /** Omitted: a CPU chute. */
    gpu: Gpu.default({ count: 0, min_vram_mb: 0, types: [] }),
    context_length: z.int().min(1).max(MAX_CONTEXT_LENGTH),
    max_output_tokens: z.int().min(1).max(MAX_CONTEXT_LENGTH).optional(),
    pricing: Pricing,
    concurrency: Scaling.concurrency.default(1),
    min_instances: Scaling.min_instances.default(0),
    max_instances: Scaling.max_instances.default(1),
    public: z.boolean().default(true),
    ...Metadata,
  })
  .superRefine((b, ctx) => {
    if (b.min_instances > b.max_instances) {
      ctx.addIssue({ code: "custom", path: ["min_instances"], message: `must be at most max_instances (${b.max_instances})` });
    }
    if (b.max_output_tokens !== undefined && b.max_output_tokens > b.context_length) {
      ctx.addIssue({ code: "custom", path: ["max_output_tokens"], message: `must be at most context_length (${b.context_length})` });
    }
    gpuCoherent(b.gpu, ctx);
  });
export type CreateChuteBody = z.infer<typeof CreateChuteBody>;

/** A CPU chute (count 0) cannot ask for GPU memory or types. */
export function gpuCoherent(gpu: { count?: number | undefined; min_vram_mb?: number | undefined; types?: string[] | undefined }, ctx: z.RefinementCtx): void {
  if (gpu.count !== 0) return;
  if ((gpu.min_vram_mb ?? 0) > 0) ctx.addIssue({ code: "custom", path: ["gpu", "min_vram_mb"], message: "needs gpu.count of at least 1" });
  if ((gpu.types ?? []).length > 0) ctx.addIssue({ code: "custom", path: ["gpu", "types"], message: "needs gpu.count of at least 1" });
}

/** What a chute's owner may change; the rest (IMMUTABLE) defines what the chute is. */
export const PatchChuteBody = z
  .strictObject({
    pricing: z
      .strictObject({ prompt: price.optional(), completion: price.optional(), input_cache_read: price.nullable().optional() })
      .optional(),
    gpu: z
      .strictObject({ count: Gpu.shape.count.optional(), min_vram_mb: z.int().min(0).max(16 * 1024 * 1024).optional(), types: z.array(GpuType).max(32).optional() })
      .optional(),
    max_output_tokens: z.int().min(1).max(MAX_CONTEXT_LENGTH).optional(),
    concurrency: Scaling.concurrency.optional(),
    min_instances: Scaling.min_instances.optional(),
    max_instances: Scaling.max_instances.optional(),
    public: z.boolean().optional(),
    ...Metadata,
  })
  .refine((b) => Object.keys(b).length > 0, "give at least one field to change");
export type PatchChuteBody = z.infer<typeof PatchChuteBody>;

/** Fields that define what a chute serves: changing them makes another chute. */
export const IMMUTABLE_FIELDS = ["name", "engine", "model_ref", "context_length"] as const;

