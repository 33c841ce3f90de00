import { z } from "zod";
import { MAX_CHOICES, MAX_EMBEDDING_INPUTS, MAX_TOP_LOGPROBS } from "../../protocol/index.ts";

/**
 * OpenAI request bodies as we accept them. Every field OpenAI's chat API defines is either
 * parsed here (and honoured or refused by normalize.ts) or listed in UNSUPPORTED_CHAT_FIELDS.
 */

const TextPart = z.object({ type: z.literal("text"), text: z.string() });
const ImagePart = z.object({
  type: z.literal("image_url"),
  image_url: z.object({ url: z.string().min(1), detail: z.enum(["auto", "low", "high"]).optional() }),
});
/** Audio and file parts are parsed so that they are refused by name rather than as a shape error. */
const AudioPart = z.looseObject({ type: z.literal("input_audio") });
const FilePart = z.looseObject({ type: z.literal("file") });
const ContentPart = z.discriminatedUnion("type", [TextPart, ImagePart, AudioPart, FilePart]);
export type ContentPart = z.infer<typeof ContentPart>;

const Content = z.union([z.string(), z.array(ContentPart).min(1)]);
const TextContent = z.union([z.string(), z.array(TextPart).min(1)]);

const ToolCall = z.object({
  id: z.string().min(1).max(128),
  type: z.literal("function"),
  function: z.object({ name: z.string().min(1).max(128), arguments: z.string() }),
});

const Message = z.discriminatedUnion("role", [
  z.object({ role: z.enum(["system", "developer"]), content: TextContent, name: z.string().max(256).optional() }),
  z.object({ role: z.literal("user"), content: Content, name: z.string().max(256).optional() }),
  z.object({
    role: z.literal("assistant"),
    content: TextContent.nullish(),
    name: z.string().max(256).optional(),
    refusal: z.string().nullish(),
    tool_calls: z.array(ToolCall).max(128).optional(),
  }),
  z.object({ role: z.literal("tool"), content: TextContent, tool_call_id: z.string().min(1).max(128) }),
]);
export type ChatMessageBody = z.infer<typeof Message>;

const Stop = z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish();
const StreamOptions = z.object({ include_usage: z.boolean().nullish() }).nullish();
const JsonSchemaObject = z.record(z.string(), z.unknown());

const Tool = z.object({
  type: z.literal("function"),
  function: z.object({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "Function names are 1-64 characters of a-z, A-Z, 0-9, _ and -."),
    description: z.string().optional(),
    parameters: JsonSchemaObject.optional(),
    strict: z.boolean().nullish(),
  }),
});

const ToolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.object({ type: z.literal("function"), function: z.object({ name: z.string().min(1) }) }),
]);

const ResponseFormat = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json_object") }),
  z.object({
    type: z.literal("json_schema"),
    json_schema: z.object({
      name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/),
      description: z.string().optional(),
      schema: JsonSchemaObject.optional(),
      strict: z.boolean().nullish(),
    }),
  }),
]);

const Penalty = z.number().min(-2).max(2).nullish();

const Sampling = {
  model: z.string().min(1),
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.int().nonnegative().nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  presence_penalty: Penalty,
  frequency_penalty: Penalty,
  repetition_penalty: z.number().gt(0).max(2).nullish(),
  logit_bias: z.record(z.string().regex(/^\d+$/, "logit_bias keys are token ids."), z.number().min(-100).max(100)).nullish(),
  seed: z.int().nullish(),
  stop: Stop,
  /** Choices to generate for each prompt. */
  n: z.int().min(1).max(MAX_CHOICES).nullish(),
  /** An end-user id for abuse monitoring: accepted and not used. */
  user: z.string().nullish(),
};

export const ChatCompletionRequest = z.looseObject({
  ...Sampling,
  messages: z.array(Message).min(1),
  max_tokens: z.int().positive().nullish(),
  max_completion_tokens: z.int().positive().nullish(),
  tools: z.array(Tool).min(1).max(128).nullish(),
  tool_choice: ToolChoice.nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  response_format: ResponseFormat.nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
  /** Only text output exists here. */
  modalities: z.array(z.literal("text", { error: "Only text output is supported." })).nullish(),
  /** Whether OpenAI stores the completion: we never store it, so `true` is refused. */
  store: z.literal(false, { error: "Stored completions are not supported." }).nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  service_tier: z.enum(["auto", "default"], { error: "Only the default service tier exists." }).nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionRequest = z.looseObject({
  ...Sampling,
  prompt: z.union([z.string(), z.array(z.string()).min(1).max(MAX_CHOICES)], {
    error: `'prompt' must be a string or an array of 1 to ${MAX_CHOICES} strings (token-id prompts are not supported).`,
  }),
  max_tokens: z.int().positive().nullish(),
  echo: z.boolean().nullish(),
  logprobs: z.int().min(0).max(5).nullish(),
  best_of: z.literal(1, { error: "Only best_of=1 is supported." }).nullish(),
  suffix: z.null({ error: "suffix is not supported." }).optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

const TokenArray = z.array(z.int().nonnegative()).min(1);

export const EmbeddingRequest = z.looseObject({
  model: z.string().min(1),
  input: z.union([
    z.string().min(1, "An input must not be empty."),
    z.array(z.string().min(1, "An input must not be empty.")).min(1).max(MAX_EMBEDDING_INPUTS),
    // Token ids are parsed to be refused by name: an engine's tokenizer is not the client's.
    TokenArray,
    z.array(TokenArray).min(1),
  ]),
  encoding_format: z.enum(["float", "base64"]).nullish(),
  dimensions: z.int().positive().nullish(),
  user: z.string().nullish(),
});
export type EmbeddingRequest = z.infer<typeof EmbeddingRequest>;

/**
 * Fields OpenAI defines that no chute can honour: refused with a 400 rather than ignored.
 * (The deprecated `functions`/`function_call` are superseded by `tools`/`tool_choice`.)
 */
export const UNSUPPORTED_CHAT_FIELDS = [
  "functions",
  "function_call",
  "audio",
  "prediction",
  "reasoning_effort",
  "web_search_options",
] as const;
