import type { FinishReason } from "../../protocol/index.ts";

/** Builders for OpenAI response bodies and SSE events. */

export type Endpoint = "chat" | "completion";

export interface UsageBody {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  endpoint: Endpoint;
  includeUsage: boolean;
}

export function usageBody(promptTokens: number, completionTokens: number): UsageBody {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export function newResponseId(endpoint: Endpoint): string {
  const rand = crypto.randomUUID().replaceAll("-", "");
  return endpoint === "chat" ? `chatcmpl-${rand}` : `cmpl-${rand}`;
}

type StreamFinish = FinishReason | "error" | null;

/** One streamed chunk: text (and/or a finish reason) for choice 0. */
export function streamChunk(meta: ResponseMeta, text: string | null, finish: StreamFinish, role = false): object {
  const base = { id: meta.id, created: meta.created, model: meta.model };
  const usage = meta.includeUsage ? { usage: null } : {};
  if (meta.endpoint === "chat") {
    const delta: Record<string, string> = {};
    if (role) delta.role = "assistant";
    if (text !== null) delta.content = text;
    return {
      ...base,
      object: "chat.completion.chunk",
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...usage,
    };
  }
  return {
    ...base,
    object: "text_completion",
    choices: [{ index: 0, text: text ?? "", logprobs: null, finish_reason: finish }],
    ...usage,
  };
}

/** The usage-only chunk sent before `[DONE]` when `stream_options.include_usage` is set. */
export function usageChunk(meta: ResponseMeta, usage: UsageBody): object {
  const object = meta.endpoint === "chat" ? "chat.completion.chunk" : "text_completion";
  return { id: meta.id, object, created: meta.created, model: meta.model, choices: [], usage };
}

/** The chunk that ends a stream that failed after it started (the official clients raise it). */
export function errorChunk(meta: ResponseMeta, error: { message: string; type: string; code: string }): object {
  return { ...streamChunk({ ...meta, includeUsage: false }, null, "error"), error: { ...error, param: null } };
}

export function completeBody(meta: ResponseMeta, text: string, finish: FinishReason, usage: UsageBody): object {
  const base = { id: meta.id, created: meta.created, model: meta.model, usage };
  if (meta.endpoint === "chat") {
    return {
      ...base,
      object: "chat.completion",
      choices: [
        { index: 0, message: { role: "assistant", content: text, refusal: null }, logprobs: null, finish_reason: finish },
      ],
    };
  }
  return { ...base, object: "text_completion", choices: [{ index: 0, text, logprobs: null, finish_reason: finish }] };
}

const encoder = new TextEncoder();

export function sseEvent(body: object): Uint8Array {
  return encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
}

export const SSE_DONE = encoder.encode("data: [DONE]\n\n");
