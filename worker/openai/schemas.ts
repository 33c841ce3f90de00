import { z } from "zod";

/** OpenAI request bodies as we accept them; anything else a client sends is checked below. */

const TextPart = z.object({ type: z.literal("text"), text: z.string() });
const Content = z.union([z.string(), z.array(TextPart).min(1)]);

const Message = z.object({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: Content,
  name: z.string().optional(),
});

const Stop = z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish();
const StreamOptions = z.object({ include_usage: z.boolean().optional() }).nullish();

const Sampling = {
  model: z.string().min(1),
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: Stop,
  n: z.literal(1, { error: "Only n=1 is supported." }).nullish(),
  user: z.string().nullish(),
};

export const ChatCompletionRequest = z.looseObject({
  ...Sampling,
  messages: z.array(Message).min(1),
  max_tokens: z.int().positive().nullish(),
  max_completion_tokens: z.int().positive().nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionRequest = z.looseObject({
  ...Sampling,
  prompt: z.union([z.string(), z.tuple([z.string()], { error: "Only one prompt per request is supported." })]),
  max_tokens: z.int().positive().nullish(),
  echo: z.literal(false, { error: "echo is not supported yet." }).nullish(),
  logprobs: z.null({ error: "logprobs is not supported yet." }).optional(),
  suffix: z.null({ error: "suffix is not supported." }).optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/** Fields OpenAI defines that no chute can honour yet: refused with a 400 rather than ignored. */
export const UNSUPPORTED_CHAT_FIELDS = [
  "tools",
  "tool_choice",
  "functions",
  "function_call",
  "logprobs",
  "top_logprobs",
  "audio",
  "modalities",
  "prediction",
] as const;

/** `messages[0].content` from a zod issue path. */
export function paramOf(path: readonly PropertyKey[]): string | null {
  if (path.length === 0) return null;
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}
