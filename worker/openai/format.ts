import type { FinishReason, TokenLogprob, ToolCall, ToolCallDelta } from "../../protocol/index.ts";

/** Builders for OpenAI response bodies and SSE events. */

export type Endpoint = "chat" | "completion" | "embedding";

export interface UsageBody {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details?: { cached_tokens: number };
}

export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  endpoint: Endpoint;
  includeUsage: boolean;
}

/** The usage object; `prompt_tokens_details.cached_tokens` only when the engine reported it. */
export function usageBody(promptTokens: number, completionTokens: number, cachedTokens?: number): UsageBody {
  const usage: UsageBody = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
  if (cachedTokens !== undefined) usage.prompt_tokens_details = { cached_tokens: Math.min(cachedTokens, promptTokens) };
  return usage;
}

/**
 * A response's id, also its invocation's key in D1: 32 hex digits, the time in ms (12) then 80
 * random bits (20). Ids that grow with time land at the end of the key's index, so a batch of
 * invocation rows writes a few pages rather than one page per row (in Miniflare's D1, random ids
 * cost about 40% more per row on a table of 4,000-17,000 rows, and more as the table grows).
 */
export function newResponseId(endpoint: Endpoint, now = Date.now()): string {
  const random = crypto.getRandomValues(new Uint8Array(10));
  let hex = now.toString(16).padStart(12, "0");
  for (const b of random) hex += (b < 16 ? "0" : "") + b.toString(16);
  return endpoint === "chat" ? `chatcmpl-${hex}` : endpoint === "embedding" ? `embd-${hex}` : `cmpl-${hex}`;
}

type StreamFinish = FinishReason | "error" | null;

/** What one streamed chunk carries for one choice. */
export interface ChunkDelta {
  /** The choice (default 0). */
  index?: number;
  text?: string | null;
  /** The first chunk of a chat stream names the role. */
  role?: boolean;
  toolCalls?: readonly ToolCallDelta[];
  logprobs?: readonly TokenLogprob[];
  /** Legacy completions: where this chunk's text starts in the whole text (for `text_offset`). */
  textOffset?: number;
}

// ---- logprobs ---------------------------------------------------------------------------------

/** Chat `logprobs`: `{content: [{token, logprob, bytes, top_logprobs}], refusal: null}`. */
export function chatLogprobs(tokens: readonly TokenLogprob[]): object {
  return {
    content: tokens.map((t) => ({
      token: t.token,
      logprob: t.logprob,
      bytes: t.bytes,
      top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
    })),
    refusal: null,
  };
}

/** Legacy completions `logprobs`: parallel arrays, `top_logprobs` as token -> logprob maps. */
export function legacyLogprobs(tokens: readonly TokenLogprob[], textOffset: number): object {
  const offsets: number[] = [];
  let at = textOffset;
  for (const t of tokens) {
    offsets.push(at);
    at += t.token.length;
  }
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => (t.logprob === null ? null : Object.fromEntries(t.top.map((a) => [a.token, a.logprob])))),
    text_offset: offsets,
  };
}

// ---- tool calls -------------------------------------------------------------------------------

function toolCallDeltaBody(d: ToolCallDelta): object {
  const fn: Record<string, string> = {};
  if (d.name !== undefined) fn.name = d.name;
  fn.arguments = d.arguments;
  return { index: d.index, ...(d.id !== undefined ? { id: d.id, type: "function" } : {}), function: fn };
}

/** Folds streamed tool-call pieces into whole calls (for non-streamed answers). */
export class ToolCallCollector {
  private readonly calls: { id: string; name: string; arguments: string }[] = [];

  add(deltas: readonly ToolCallDelta[]): void {
    for (const d of deltas) {
      const call = (this.calls[d.index] ??= { id: "", name: "", arguments: "" });
      if (d.id !== undefined) call.id = d.id;
      if (d.name !== undefined) call.name = d.name;
      call.arguments += d.arguments;
    }
  }

  get all(): ToolCall[] {
    return this.calls.filter((c) => c !== undefined);
  }
}

// ---- chunks and bodies ------------------------------------------------------------------------

/** One streamed chunk for one choice. */
export function streamChunk(meta: ResponseMeta, delta: ChunkDelta, finish: StreamFinish): object {
  const base = { id: meta.id, created: meta.created, model: meta.model };
  const usage = meta.includeUsage ? { usage: null } : {};
  if (meta.endpoint === "chat") {
    const body: Record<string, unknown> = {};
    if (delta.role) body.role = "assistant";
    if (delta.text !== undefined && delta.text !== null) body.content = delta.text;
    if (delta.toolCalls?.length) body.tool_calls = delta.toolCalls.map(toolCallDeltaBody);
    const logprobs = delta.logprobs?.length ? chatLogprobs(delta.logprobs) : null;
    return {
      ...base,
      object: "chat.completion.chunk",
      choices: [{ index: delta.index ?? 0, delta: body, logprobs, finish_reason: finish }],
      ...usage,
    };
  }
  const logprobs = delta.logprobs?.length ? legacyLogprobs(delta.logprobs, delta.textOffset ?? 0) : null;
  return {
    ...base,
    object: "text_completion",
    choices: [{ index: delta.index ?? 0, text: delta.text ?? "", logprobs, finish_reason: finish }],
    ...usage,
  };
}

/**
 * The SSE events of chunks that carry only text (no role, tool calls, logprobs or finish): most
 * of a stream's events. The same bytes as `sseEvent(streamChunk(meta, { index, text }, null))`,
 * with the parts every such event of the stream shares encoded once.
 */
export function textEventEncoder(meta: ResponseMeta): (index: number, text: string) => Uint8Array {
  const chat = meta.endpoint === "chat";
  const head = `data: {"id":${JSON.stringify(meta.id)},"created":${meta.created},"model":${JSON.stringify(meta.model)},"object":${chat ? '"chat.completion.chunk"' : '"text_completion"'},"choices":[{"index":`;
  const field = chat ? ',"delta":{"content":' : ',"text":';
  const tail = `${chat ? "}" : ""},"logprobs":null,"finish_reason":null}]${meta.includeUsage ? ',"usage":null' : ""}}\n\n`;
  return (index, text) => encoder.encode(head + index + field + JSON.stringify(text) + tail);
}

/** The usage-only chunk sent before `[DONE]` when `stream_options.include_usage` is set. */
export function usageChunk(meta: ResponseMeta, usage: UsageBody): object {
  const object = meta.endpoint === "chat" ? "chat.completion.chunk" : "text_completion";
  return { id: meta.id, object, created: meta.created, model: meta.model, choices: [], usage };
}

/** The chunk that ends a stream that failed after it started (the official clients raise it). */
export function errorChunk(meta: ResponseMeta, error: { message: string; type: string; code: string }): object {
  return { ...streamChunk({ ...meta, includeUsage: false }, {}, "error"), error: { ...error, param: null } };
}

/** One choice of a whole (non-streamed) answer. */
export interface ChoiceOutput {
  index: number;
  text: string;
  finish: FinishReason;
  toolCalls?: readonly ToolCall[];
  /** null when logprobs were not asked for. */
  logprobs: readonly TokenLogprob[] | null;
}

export function completeBody(meta: ResponseMeta, out: { usage: UsageBody; choices: readonly ChoiceOutput[] }): object {
  const base = { id: meta.id, created: meta.created, model: meta.model, usage: out.usage };
  if (meta.endpoint === "chat") {
    const choices = out.choices.map((choice) => {
      const calls = choice.toolCalls ?? [];
      const message = {
        role: "assistant",
        content: calls.length > 0 && choice.text === "" ? null : choice.text,
        refusal: null,
        ...(calls.length > 0
          ? { tool_calls: calls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })) }
          : {}),
      };
      const logprobs = choice.logprobs ? chatLogprobs(choice.logprobs) : null;
      return { index: choice.index, message, logprobs, finish_reason: choice.finish };
    });
    return { ...base, object: "chat.completion", choices };
  }
  const choices = out.choices.map((c) => ({ index: c.index, text: c.text, logprobs: c.logprobs ? legacyLogprobs(c.logprobs, 0) : null, finish_reason: c.finish }));
  return { ...base, object: "text_completion", choices };
}

/** The embeddings response: one `embedding` object per input, floats or base64 float32. */
export function embeddingsBody(model: string, vectors: readonly (number[] | string)[], promptTokens: number): object {
  return {
    object: "list",
    data: vectors.map((embedding, index) => ({ object: "embedding", index, embedding })),
    model,
    usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
  };
}

const encoder = new TextEncoder();

export function sseEvent(body: object): Uint8Array {
  return encoder.encode(`data: ${JSON.stringify(body)}\n\n`);
}

export const SSE_DONE = encoder.encode("data: [DONE]\n\n");
