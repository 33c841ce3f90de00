import type { z } from "zod";
import type { JobSpec, SamplingParams } from "../../protocol/index.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { ApiError } from "../errors.ts";
import {
  ChatCompletionRequest,
  CompletionRequest,
  UNSUPPORTED_CHAT_FIELDS,
  paramOf,
} from "../openai/schemas.ts";
import type { Endpoint } from "../openai/format.ts";

/** A validated request, turned into the job an engine runs. */
export interface NormalizedRequest {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  spec: JobSpec;
}

/** Legacy completions default to 16 tokens, as OpenAI's do. */
const LEGACY_DEFAULT_MAX_TOKENS = 16;

export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("invalid_request", "The request body must be a JSON object.");
  }
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = issue ? paramOf(issue.path) : null;
  const what = issue?.code === "invalid_type" && issue.input === undefined ? "Missing required parameter" : "Invalid parameter";
  throw new ApiError("invalid_request", `${what}${param ? ` '${param}'` : ""}: ${issue?.message ?? "invalid body"}.`, param);
}

/** The model name, checked before the rest of the body so unknown models are 404 rather than 400. */
export function modelOf(body: unknown): string {
  const model = typeof body === "object" && body !== null ? (body as Record<string, unknown>).model : undefined;
  if (typeof model !== "string" || model === "") {
    throw new ApiError("invalid_request", "Missing required parameter 'model'.", "model");
  }
  return model;
}

export function normalizeChat(body: unknown, chute: ChuteRecord): NormalizedRequest {
  const req = parseBody(ChatCompletionRequest, body);
  for (const field of UNSUPPORTED_CHAT_FIELDS) {
    if (req[field] !== undefined && req[field] !== null) {
      throw new ApiError("invalid_request", `'${field}' is not supported by model '${chute.name}'.`, field);
    }
  }
  const format = req.response_format as { type?: unknown } | undefined | null;
  if (format && format.type !== "text") {
    throw new ApiError("invalid_request", `response_format '${String(format.type)}' is not supported by model '${chute.name}'.`, "response_format");
  }
  const last = req.messages[req.messages.length - 1];
  if (last?.role === "assistant") {
    throw new ApiError("invalid_request", "The last message must not be from the assistant.", "messages");
  }
  const messages = req.messages.map((m) => ({
    role: m.role,
    content: typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join(""),
  }));
  const maxTokens = maxTokensFor(chute, req.max_completion_tokens ?? req.max_tokens, req.max_completion_tokens ? "max_completion_tokens" : "max_tokens");
  return {
    endpoint: "chat",
    model: req.model,
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    spec: { kind: "chat", messages, params: sampling(req, maxTokens) },
  };
}

export function normalizeCompletion(body: unknown, chute: ChuteRecord): NormalizedRequest {
  const req = parseBody(CompletionRequest, body);
  const prompt = typeof req.prompt === "string" ? req.prompt : req.prompt[0];
  const maxTokens = maxTokensFor(chute, req.max_tokens ?? Math.min(LEGACY_DEFAULT_MAX_TOKENS, chute.maxOutputTokens), "max_tokens");
  return {
    endpoint: "completion",
    model: req.model,
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    spec: { kind: "completion", prompt, params: sampling(req, maxTokens) },
  };
}

function maxTokensFor(chute: ChuteRecord, requested: number | null | undefined, param: string): number {
  if (requested === null || requested === undefined) return chute.maxOutputTokens;
  if (requested > chute.maxOutputTokens) {
    throw new ApiError(
      "invalid_request",
      `'${param}' is too large: ${requested}. Model '${chute.name}' generates at most ${chute.maxOutputTokens} tokens.`,
      param,
    );
  }
  return requested;
}

interface SamplingFields {
  temperature?: number | null | undefined;
  top_p?: number | null | undefined;
  seed?: number | null | undefined;
  stop?: string | string[] | null | undefined;
}

function sampling(req: SamplingFields, maxTokens: number): SamplingParams {
  const params: SamplingParams = { maxTokens };
  if (req.temperature !== null && req.temperature !== undefined) params.temperature = req.temperature;
  if (req.top_p !== null && req.top_p !== undefined) params.topP = req.top_p;
  if (req.seed !== null && req.seed !== undefined) params.seed = req.seed;
  if (req.stop !== null && req.stop !== undefined) params.stop = typeof req.stop === "string" ? [req.stop] : req.stop;
  return params;
}
