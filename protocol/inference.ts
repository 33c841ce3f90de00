import { z } from "zod";

/**
 * The normalized inference job that the gateway sends to an agent and that every engine
 * consumes. The gateway turns the OpenAI request into this; engines never see raw OpenAI bodies.
 *
 * Versioning: protocol v1 grows only by optional fields and new `kind`s. A job uses a new field
 * only when the client asked for what it carries, so an agent never receives what it cannot
 * have been asked for, and a job without the new fields means exactly what it meant before.
 */

/** Most inputs one embeddings request may carry (OpenAI's limit). */
export const MAX_EMBEDDING_INPUTS = 2048;

/** Most choices one request may ask for (`n` x prompts): each takes a slot of one instance. */
export const MAX_CHOICES = 16;

/** Most tokens OpenAI lets a request ask alternatives for (`top_logprobs`). */
export const MAX_TOP_LOGPROBS = 20;

export const SamplingParams = z.object({
  /** Hard cap on generated tokens (always set by the gateway). */
  maxTokens: z.int().positive(),
  temperature: z.number().min(0).max(2).optional(),
  topP: z.number().gt(0).max(1).optional(),
  /** Keep only the k most likely tokens (0 or unset = off). */
  topK: z.int().nonnegative().optional(),
  /** Drop tokens less likely than minP x the most likely one (0 or unset = off). */
  minP: z.number().min(0).max(1).optional(),
  seed: z.int().optional(),
  /** Stop sequences; the engine stops before emitting any of them (they are not part of the output). */
  stop: z.array(z.string().min(1)).max(4).optional(),
  /** OpenAI presence penalty: subtracted once from the logit of every token already generated. */
  presencePenalty: z.number().min(-2).max(2).optional(),
  /** OpenAI frequency penalty: subtracted per occurrence from the logit of generated tokens. */
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  /** Multiplicative repetition penalty (llama.cpp / vLLM style, 1 = off). */
  repetitionPenalty: z.number().gt(0).max(2).optional(),
  /** Token id (as a decimal string) -> bias added to its logit, -100..100 (-100 bans, 100 forces). */
  logitBias: z.record(z.string().regex(/^\d+$/), z.number().min(-100).max(100)).optional(),
  /**
   * Report the log probability of each generated token, with this many alternatives (0..20);
   * `prompt`: also of each prompt token (legacy completions with `echo`), in the first chunk.
   */
  logprobs: z.object({ top: z.int().min(0).max(MAX_TOP_LOGPROBS), prompt: z.boolean().optional() }).optional(),
});
export type SamplingParams = z.infer<typeof SamplingParams>;

/** A JSON Schema as the client sent it (validated by the engine that compiles it). */
export const JsonSchema = z.record(z.string(), z.unknown());
export type JsonSchema = z.infer<typeof JsonSchema>;

export const ToolCall = z.object({
  id: z.string().min(1).max(128),
  name: z.string().min(1).max(128),
  /** The arguments as the model wrote them: JSON text. */
  arguments: z.string(),
});
export type ToolCall = z.infer<typeof ToolCall>;

export const ChatRole = z.enum(["system", "developer", "user", "assistant", "tool"]);
export const ChatMessage = z.object({
  role: ChatRole,
  content: z.string(),
  /** Assistant turns: the calls the model made. */
  toolCalls: z.array(ToolCall).optional(),
  /** Tool turns: which call this is the result of. */
  toolCallId: z.string().optional(),
  /** The participant's name (OpenAI `name`): forwarded upstream; llama.cpp's chat templates have no place for it. */
  name: z.string().max(256).optional(),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

export const ToolDefinition = z.object({
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/),
  description: z.string().optional(),
  /** JSON Schema of the arguments object; absent = no parameters. */
  parameters: JsonSchema.optional(),
});
export type ToolDefinition = z.infer<typeof ToolDefinition>;

/** `auto`: the model chooses; `required`: it must call one; `{name}`: it must call that one. */
export const ToolChoice = z.union([z.enum(["none", "auto", "required"]), z.object({ name: z.string() })]);
export type ToolChoice = z.infer<typeof ToolChoice>;

export const ResponseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("json_object") }),
  z.object({ type: z.literal("json_schema"), name: z.string(), schema: JsonSchema, strict: z.boolean() }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormat>;

export const JobSpec = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("chat"),
    messages: z.array(ChatMessage).min(1),
    params: SamplingParams,
    tools: z.array(ToolDefinition).min(1).max(128).optional(),
    toolChoice: ToolChoice.optional(),
    /** False: at most one tool call per answer. */
    parallelToolCalls: z.boolean().optional(),
    responseFormat: ResponseFormat.optional(),
    /** Choices to generate (OpenAI `n`; v1 addition): absent = 1. */
    n: z.int().min(2).max(MAX_CHOICES).optional(),
  }),
  z.object({
    kind: z.literal("completion"),
    prompt: z.string(),
    params: SamplingParams,
    /**
     * An embedding job: embed each input instead of generating (`prompt` is the inputs joined
     * by newlines, which is what the gateway's prompt bound and hold are computed from).
     * Rides on the completion kind so that every consumer of JobSpec keeps compiling; vectors
     * come back in chunk frames (`embeddings`), usage in the done frame.
     */
    embedding: z.object({ input: z.array(z.string()).min(1).max(MAX_EMBEDDING_INPUTS) }).optional(),
    /** Choices per prompt (OpenAI `n`; v1 addition): absent = 1. */
    n: z.int().min(2).max(MAX_CHOICES).optional(),
    /** Several prompts (a legacy prompt array; v1 addition): `prompt` is the first of them. */
    prompts: z.array(z.string()).min(2).max(MAX_CHOICES).optional(),
  }),
]);
export type JobSpec = z.infer<typeof JobSpec>;
export type ChatJobSpec = Extract<JobSpec, { kind: "chat" }>;

/** One choice of a job: what an engine generates (a single-choice spec), and which prompt it answers. */
export interface Choice {
  index: number;
  prompt: number;
  spec: JobSpec;
}

/** How many choices a job asks for: its prompts times `n`. */
export function choiceCount(spec: JobSpec): number {
  return (spec.kind === "completion" ? (spec.prompts?.length ?? 1) : 1) * (spec.n ?? 1);
}

/**
 * A job's choices as single-choice specs, in OpenAI's order (choice `p * n + j` is the j-th
 * answer to prompt p). Copies of one prompt get seeds seed, seed+1, ... so a seeded request
 * stays reproducible and its choices still differ.
 */
export function choicesOf(spec: JobSpec): Choice[] {
  const n = spec.n ?? 1;
  const prompts = spec.kind === "completion" ? (spec.prompts ?? [spec.prompt]) : [null];
  const out: Choice[] = [];
  prompts.forEach((prompt, p) => {
    for (let j = 0; j < n; j++) {
      const params = spec.params.seed !== undefined && j > 0 ? { ...spec.params, seed: spec.params.seed + j } : spec.params;
      const single: JobSpec =
        spec.kind === "completion"
          ? { ...withoutChoices(spec), prompt: prompt ?? spec.prompt, params }
          : { ...withoutChoices(spec), params };
      out.push({ index: p * n + j, prompt: p, spec: single });
    }
  });
  return out;
}

function withoutChoices<T extends JobSpec>(spec: T): T {
  const copy = { ...spec };
  delete copy.n;
  if (copy.kind === "completion") delete copy.prompts;
  return copy;
}

export const FinishReason = z.enum(["stop", "length", "tool_calls"]);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({
  promptTokens: z.int().nonnegative(),
  completionTokens: z.int().nonnegative(),
  /** Prompt tokens served from the engine's prefix cache, when the engine knows (v1 addition). */
  cachedPromptTokens: z.int().nonnegative().optional(),
});
export type Usage = z.infer<typeof Usage>;

/** Log probability of one token (OpenAI `logprobs.content[]` without the gateway's formatting). */
export const TokenLogprob = z.object({
  token: z.string(),
  /** null only for a prompt's first token, which nothing precedes. */
  logprob: z.number().nullable(),
  /** UTF-8 bytes of the token (a token may hold part of a character). */
  bytes: z.array(z.int().min(0).max(255)),
  top: z.array(z.object({ token: z.string(), logprob: z.number(), bytes: z.array(z.int().min(0).max(255)) })).max(MAX_TOP_LOGPROBS),
});
export type TokenLogprob = z.infer<typeof TokenLogprob>;

/**
 * A streamed piece of a tool call, as OpenAI streams them: the first piece of call `index`
 * carries its id and name (and usually empty arguments); later pieces carry argument text.
 */
export const ToolCallDelta = z.object({
  index: z.int().min(0).max(127),
  id: z.string().min(1).max(128).optional(),
  name: z.string().min(1).max(128).optional(),
  arguments: z.string(),
});
export type ToolCallDelta = z.infer<typeof ToolCallDelta>;

/** One embedding vector: little-endian float32 values, base64 (exact and compact on the wire). */
export const EmbeddingVector = z.object({
  index: z.int().min(0).max(MAX_EMBEDDING_INPUTS - 1),
  base64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/),
});
export type EmbeddingVector = z.infer<typeof EmbeddingVector>;
