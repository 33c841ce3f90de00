import { z } from "zod";

/**
 * The normalized inference job that the gateway sends to an agent and that every engine
 * consumes. The gateway turns the OpenAI request into this; engines never see raw OpenAI bodies.
 */
export const SamplingParams = z.object({
  /** Hard cap on generated tokens (always set by the gateway). */
  maxTokens: z.int().positive(),
  temperature: z.number().min(0).max(2).optional(),
  topP: z.number().gt(0).max(1).optional(),
  seed: z.int().optional(),
  /** Stop sequences; the engine stops before emitting any of them (they are not part of the output). */
  stop: z.array(z.string().min(1)).max(4).optional(),
});
export type SamplingParams = z.infer<typeof SamplingParams>;

export const ChatRole = z.enum(["system", "developer", "user", "assistant"]);
export const ChatMessage = z.object({ role: ChatRole, content: z.string() });
export type ChatMessage = z.infer<typeof ChatMessage>;

export const JobSpec = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("chat"), messages: z.array(ChatMessage).min(1), params: SamplingParams }),
  z.object({ kind: z.literal("completion"), prompt: z.string(), params: SamplingParams }),
]);
export type JobSpec = z.infer<typeof JobSpec>;

export const FinishReason = z.enum(["stop", "length"]);
export type FinishReason = z.infer<typeof FinishReason>;

export const Usage = z.object({
  promptTokens: z.int().nonnegative(),
  completionTokens: z.int().nonnegative(),
});
export type Usage = z.infer<typeof Usage>;
