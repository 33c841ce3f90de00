import type { ErrorCode, FinishReason, JobSpec, TokenLogprob, ToolCallDelta } from "../../protocol/index.ts";

/** Engine kinds the agent can run, as a literal union (never a free string). */
export type EngineKind = "llama-cpp" | "openai-upstream" | "command";

export interface LlamaCppEngineConfig {
  kind: "llama-cpp";
  /** Path to a GGUF file. */
  modelPath: string;
  /** Parallel sequences = max concurrent requests on this instance. */
  parallel: number;
  /** Context size per sequence, in tokens. */
  contextSize: number;
  /** CPU threads for llama.cpp; 1 on small hosts (its default oversubscribes). */
  threads?: number;
  /** Use a GPU when the host has one ("auto"), or force CPU (false). */
  gpu?: "auto" | false;
}

export interface OpenAIUpstreamEngineConfig {
  kind: "openai-upstream";
  /** Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama-server). */
  baseURL: string;
  /** Model name to send upstream. */
  model: string;
  apiKey?: string;
  /** Max concurrent requests the agent sends upstream. */
  parallel: number;
  /** Abort a request that has produced nothing for this long (ms). */
  idleTimeoutMs?: number;
}

export interface CommandEngineConfig {
  kind: "command";
  /** The command line, split on whitespace (no shell); placeholders {model} {port} {context} {gpus}. */
  command: string;
  /** Model name substituted for {model} and sent upstream. */
  model: string;
  /** Fixed port; by default a free one. */
  port?: number;
  /** Polled with GET until it answers 2xx before the engine counts as ready. */
  healthPath: string;
  startupTimeoutMs: number;
  parallel: number;
  env: Record<string, string>;
  /** Context length substituted for {context}; GPU indices for {gpus} and CUDA_VISIBLE_DEVICES. */
  contextLength?: number;
  gpus?: number[];
}

export type EngineConfig = LlamaCppEngineConfig | OpenAIUpstreamEngineConfig | CommandEngineConfig;

export interface GenerateHooks {
  /**
   * Called for every piece of generated text with the number of tokens it holds (>= 1) and,
   * when the job asked for logprobs, one entry per token.
   */
  onDelta(text: string, tokens: number, logprobs?: TokenLogprob[]): void;
  /**
   * Called for every piece of a tool call (jobs with tools): the first piece of a call carries
   * its id and name; `tokens` is what the piece took to generate (>= 1).
   */
  onToolCall?(delta: ToolCallDelta, tokens: number): void;
  /** Jobs that asked for the prompt's logprobs: called once, before the first delta. */
  onPromptLogprobs?(logprobs: TokenLogprob[]): void;
  /** Called once, before the first delta, with the rendered prompt's token count, when known. */
  onPrompt?(promptTokens: number): void;
  /** Aborted when the client went away or the gateway cancelled the job. */
  signal: AbortSignal;
}

export interface GenerateResult {
  finishReason: FinishReason;
  /** Tokens of the whole rendered prompt (not only the part that missed the KV cache). */
  promptTokens: number;
  completionTokens: number;
  /** Of `promptTokens`, those served from the engine's prefix cache, when the engine knows. */
  cachedPromptTokens?: number;
}

export interface EmbedResult {
  /** One vector per input, in order. */
  vectors: Float32Array[];
  /** Tokens of all inputs together. */
  promptTokens: number;
}

/** Thrown by engines for failures the gateway should see with a code. */
export class EngineError extends Error {
  constructor(
    message: string,
    /** True when no token was produced yet, so the gateway may retry elsewhere. */
    readonly retryable: boolean,
    /** What the gateway answers with: `invalid_request` for a job this engine cannot run as asked. */
    readonly code: ErrorCode = "engine_error",
  ) {
    super(message);
    this.name = "EngineError";
  }
}

export interface Engine {
  readonly kind: EngineKind;
  /** Max concurrent generate() calls; callers never exceed it. */
  readonly capacity: number;
  /**
   * Generate for one job. Stop strings are honoured (never emitted). When `signal` aborts,
   * generation stops promptly and the promise rejects with an AbortError (or resolves); the
   * caller ignores the result of an aborted job.
   */
  generate(spec: JobSpec, hooks: GenerateHooks): Promise<GenerateResult>;
  /** Embed each input (one vector per input, in order), when the engine can. */
  embed?(input: readonly string[], signal: AbortSignal): Promise<EmbedResult>;
  /** Free the model / connections. */
  close(): Promise<void>;
  /** Engines that run as a separate process: resolves when it exited (closed, or died on its own). */
  readonly exited?: Promise<unknown>;
}
