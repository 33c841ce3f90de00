import { choiceCount, type ChatMessage, type JobSpec, type ResponseFormat, type SamplingParams, type ToolChoice, type ToolDefinition } from "../../protocol/index.ts";
import { toGrammarSchema } from "../../protocol/json-schema.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { ApiError } from "../errors.ts";
import { parseBody } from "../http/json.ts";
import { capabilitiesOf, type Feature, type SamplingParameter } from "../openai/capabilities.ts";
import {
  ChatCompletionRequest,
  CompletionRequest,
  EmbeddingRequest,
  UNSUPPORTED_CHAT_FIELDS,
  type ChatMessageBody,
} from "../openai/schemas.ts";
import type { Endpoint } from "../openai/format.ts";

/** A validated request, turned into the job an engine runs. */
export interface NormalizedRequest {
  endpoint: Endpoint;
  model: string;
  stream: boolean;
  includeUsage: boolean;
  spec: JobSpec;
  /** Legacy completions with `echo`: each prompt (by its index), sent back before its choices' text. */
  echo?: string[];
  /** Embeddings: how vectors are returned. */
  encoding?: "float" | "base64";
}

/** Legacy completions default to 16 tokens, as OpenAI's do. */
const LEGACY_DEFAULT_MAX_TOKENS = 16;

/** The model name, checked before the rest of the body so unknown models are 404 rather than 400. */
export function modelOf(body: unknown): string {
  const model = typeof body === "object" && body !== null ? (body as Record<string, unknown>).model : undefined;
  if (typeof model !== "string" || model === "") {
    throw new ApiError("invalid_request", "Missing required parameter 'model'.", "model");
  }
  return model;
}

const given = <T>(v: T | null | undefined): v is T => v !== null && v !== undefined;

function refuse(message: string, param: string): never {
  throw new ApiError("invalid_request", message, param);
}

function requireFeature(chute: ChuteRecord, feature: Feature, param: string): void {
  if (!capabilitiesOf(chute).features.includes(feature)) refuse(`'${param}' is not supported by model '${chute.name}'.`, param);
}

export function normalizeChat(body: unknown, chute: ChuteRecord): NormalizedRequest {
  const req = parseBody(ChatCompletionRequest, body);
  for (const field of UNSUPPORTED_CHAT_FIELDS) {
    if (given(req[field])) refuse(`'${field}' is not supported by model '${chute.name}'.`, field);
  }
  const last = req.messages[req.messages.length - 1];
  if (last?.role === "assistant") refuse("The last message must not be from the assistant.", "messages");
  const messages = chatMessages(req.messages);
  const maxTokens = maxTokensFor(chute, req.max_completion_tokens ?? req.max_tokens, req.max_completion_tokens ? "max_completion_tokens" : "max_tokens");
  const params = sampling(req, maxTokens, chute);
  if (req.logprobs === true) {
    requireFeature(chute, "logprobs", "logprobs");
    params.logprobs = { top: req.top_logprobs ?? 0 };
  } else if (given(req.top_logprobs)) {
    refuse("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs");
  }
  const spec: Extract<JobSpec, { kind: "chat" }> = { kind: "chat", messages, params };
  const responseFormat = responseFormatOf(req.response_format, chute);
  if (responseFormat) spec.responseFormat = responseFormat;
  Object.assign(spec, toolsOf(req, chute));
  if (spec.toolChoice !== undefined && spec.toolChoice !== "none" && spec.toolChoice !== "auto" && responseFormat) {
    refuse("'response_format' cannot be combined with a 'tool_choice' that forces a tool call.", "response_format");
  }
  const modelMayCall = spec.tools !== undefined && (spec.toolChoice === undefined || spec.toolChoice === "auto");
  if (modelMayCall && !capabilitiesOf(chute).toolsWithLogprobsOrFormat && (responseFormat || params.logprobs)) {
    const param = responseFormat ? "response_format" : "logprobs";
    refuse(`Model '${chute.name}' cannot combine '${param}' with tools the model may choose to call (tool_choice auto); use tool_choice 'required', a named function or 'none'.`, param);
  }
  withChoices(spec, chute, req.n);
  return {
    endpoint: "chat",
    model: req.model,
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    spec,
  };
}

/**
 * Several choices (`n`, and for legacy completions several prompts): each takes a slot of one
 * instance, so a request can ask for at most the chute's concurrency of them.
 */
function withChoices(spec: JobSpec, chute: ChuteRecord, n: number | null | undefined): void {
  if (given(n) && n > 1) spec.n = n;
  const count = choiceCount(spec);
  if (count > chute.concurrency) {
    const what = spec.kind === "completion" && spec.prompts ? "prompts x n" : "n";
    refuse(`Model '${chute.name}' runs at most ${chute.concurrency} choices per request (${what} = ${count}).`, spec.kind === "completion" && spec.prompts && !(given(n) && n > 1) ? "prompt" : "n");
  }
}

function textOf(content: string | readonly { type: string; text?: string }[] | null | undefined): string {
  if (!given(content)) return "";
  return typeof content === "string" ? content : content.map((p) => p.text ?? "").join("");
}

function chatMessages(bodies: readonly ChatMessageBody[]): ChatMessage[] {
  const callIds = new Set<string>();
  return bodies.map((m, i): ChatMessage => {
    if (m.role === "user" && typeof m.content !== "string") {
      for (const [j, part] of m.content.entries()) {
        if (part.type !== "text") {
          // No chute takes images, audio or files yet: the listing declares text input only.
          refuse(`Content parts of type '${part.type}' are not supported: this model takes text input only.`, `messages[${i}].content[${j}]`);
        }
      }
    }
    if (m.role === "assistant" && m.tool_calls?.length) {
      for (const c of m.tool_calls) callIds.add(c.id);
      const toolCalls = m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments }));
      return { role: "assistant", content: textOf(m.content), toolCalls, ...(m.name !== undefined ? { name: m.name } : {}) };
    }
    if (m.role === "tool") {
      if (!callIds.has(m.tool_call_id)) {
        refuse(`Message ${i} answers tool call '${m.tool_call_id}', which no earlier assistant message made.`, `messages[${i}].tool_call_id`);
      }
      return { role: "tool", content: textOf(m.content), toolCallId: m.tool_call_id };
    }
    return { role: m.role, content: textOf(m.content), ...(m.name !== undefined ? { name: m.name } : {}) };
  });
}

function responseFormatOf(format: ChatCompletionRequest["response_format"], chute: ChuteRecord): ResponseFormat | undefined {
  if (!given(format) || format.type === "text") return undefined;
  if (format.type === "json_object") {
    requireFeature(chute, "json_mode", "response_format");
    return { type: "json_object" };
  }
  requireFeature(chute, "structured_outputs", "response_format");
  const { name, schema, strict } = format.json_schema;
  if (!schema) refuse("'response_format.json_schema.schema' is required.", "response_format.json_schema.schema");
  checkSchema(chute, schema, "response_format.json_schema.schema");
  return { type: "json_schema", name, schema, strict: strict === true };
}

function checkSchema(chute: ChuteRecord, schema: unknown, param: string): void {
  if (!capabilitiesOf(chute).grammarSchemas) return;
  const r = toGrammarSchema(schema, param);
  if (!r.ok) refuse(`Invalid schema for model '${chute.name}' at '${r.path}': ${r.message}.`, param);
}

function toolsOf(req: ChatCompletionRequest, chute: ChuteRecord): { tools?: ToolDefinition[]; toolChoice?: ToolChoice; parallelToolCalls?: boolean } {
  const out: { tools?: ToolDefinition[]; toolChoice?: ToolChoice; parallelToolCalls?: boolean } = {};
  if (!given(req.tools)) {
    if (given(req.tool_choice) && req.tool_choice !== "none") refuse("'tool_choice' is only allowed when 'tools' are given.", "tool_choice");
    if (given(req.parallel_tool_calls)) refuse("'parallel_tool_calls' is only allowed when 'tools' are given.", "parallel_tool_calls");
    return out;
  }
  requireFeature(chute, "tools", "tools");
  const names = new Set<string>();
  out.tools = req.tools.map((t, i) => {
    const { name, description, parameters } = t.function;
    if (names.has(name)) refuse(`Duplicate function name '${name}'.`, `tools[${i}].function.name`);
    names.add(name);
    if (parameters) checkSchema(chute, parameters, `tools[${i}].function.parameters`);
    return { name, ...(description !== undefined ? { description } : {}), ...(parameters ? { parameters } : {}) };
  });
  const choice = req.tool_choice;
  if (given(choice)) {
    if (typeof choice === "string") out.toolChoice = choice;
    else if (!names.has(choice.function.name)) refuse(`'tool_choice' names function '${choice.function.name}', which is not in 'tools'.`, "tool_choice");
    else out.toolChoice = { name: choice.function.name };
  }
  if (given(req.parallel_tool_calls)) out.parallelToolCalls = req.parallel_tool_calls;
  return out;
}

export function normalizeCompletion(body: unknown, chute: ChuteRecord): NormalizedRequest {
  const req = parseBody(CompletionRequest, body);
  const prompts = typeof req.prompt === "string" ? [req.prompt] : req.prompt;
  const prompt = prompts[0]!;
  const maxTokens = maxTokensFor(chute, req.max_tokens ?? Math.min(LEGACY_DEFAULT_MAX_TOKENS, chute.maxOutputTokens), "max_tokens");
  const params = sampling(req, maxTokens, chute);
  if (given(req.logprobs)) {
    requireFeature(chute, "logprobs", "logprobs");
    params.logprobs = { top: req.logprobs };
    if (req.echo === true) {
      if (!capabilitiesOf(chute).promptLogprobs) refuse(`'echo' with 'logprobs' (the prompt's log probabilities) is not supported by model '${chute.name}'.`, "echo");
      params.logprobs.prompt = true;
    }
  }
  const spec: JobSpec = { kind: "completion", prompt, params, ...(prompts.length > 1 ? { prompts } : {}) };
  withChoices(spec, chute, req.n);
  return {
    endpoint: "completion",
    model: req.model,
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    spec,
    ...(req.echo === true ? { echo: prompts } : {}),
  };
}

/**
 * An embeddings request as a job. It rides on the completion kind (see JobSpec): the prompt is
 * the inputs joined by blank lines, which bounds their tokens for the hold like any prompt
 * (each input may add a BOS and a leading-space token: the separators and the bound's
 * overhead cover them); nothing is generated, so the one token of maxTokens is never charged.
 */
export function normalizeEmbedding(body: unknown, chute: ChuteRecord): NormalizedRequest {
  const req = parseBody(EmbeddingRequest, body);
  if (!capabilitiesOf(chute).embeddings) refuse(`Model '${chute.name}' does not create embeddings.`, "model");
  const inputs: unknown[] = typeof req.input === "string" ? [req.input] : req.input;
  const texts = inputs.filter((i): i is string => typeof i === "string");
  if (texts.length !== inputs.length) refuse("Token-id inputs are not supported: send the text.", "input");
  if (given(req.dimensions)) refuse(`'dimensions' is not supported by model '${chute.name}': it returns its native size.`, "dimensions");
  return {
    endpoint: "embedding",
    model: req.model,
    stream: false,
    includeUsage: false,
    spec: { kind: "completion", prompt: texts.join("\n\n"), params: { maxTokens: 1 }, embedding: { input: texts } },
    encoding: req.encoding_format ?? "float",
  };
}

/** The normalizer of each endpoint. */
export function normalize(endpoint: Endpoint, body: unknown, chute: ChuteRecord): NormalizedRequest {
  if (endpoint === "chat") return normalizeChat(body, chute);
  if (endpoint === "embedding") return normalizeEmbedding(body, chute);
  return normalizeCompletion(body, chute);
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
  top_k?: number | null | undefined;
  min_p?: number | null | undefined;
  presence_penalty?: number | null | undefined;
  frequency_penalty?: number | null | undefined;
  repetition_penalty?: number | null | undefined;
  logit_bias?: Record<string, number> | null | undefined;
  seed?: number | null | undefined;
  stop?: string | string[] | null | undefined;
}

/** Request field -> job parameter, for every sampling field a chute may declare. */
const SAMPLING_FIELDS = {
  temperature: "temperature",
  top_p: "topP",
  top_k: "topK",
  min_p: "minP",
  presence_penalty: "presencePenalty",
  frequency_penalty: "frequencyPenalty",
  repetition_penalty: "repetitionPenalty",
  logit_bias: "logitBias",
  seed: "seed",
} as const satisfies Partial<Record<SamplingParameter & keyof SamplingFields, keyof SamplingParams>>;

function sampling(req: SamplingFields, maxTokens: number, chute: ChuteRecord): SamplingParams {
  const supported = capabilitiesOf(chute).samplingParameters;
  const params: SamplingParams = { maxTokens };
  for (const [field, key] of Object.entries(SAMPLING_FIELDS) as [keyof typeof SAMPLING_FIELDS, (typeof SAMPLING_FIELDS)[keyof typeof SAMPLING_FIELDS]][]) {
    const value = req[field];
    if (!given(value)) continue;
    if (!supported.includes(field)) refuse(`'${field}' is not supported by model '${chute.name}'.`, field);
    (params as Record<string, unknown>)[key] = value;
  }
  if (given(req.stop)) {
    if (!supported.includes("stop")) refuse(`'stop' is not supported by model '${chute.name}'.`, "stop");
    params.stop = typeof req.stop === "string" ? [req.stop] : req.stop;
  }
  return params;
}
