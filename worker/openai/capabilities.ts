import type { ChuteRecord } from "../catalog/types.ts";

/**
 * What a chute can honour, by engine. The models listing declares exactly this, and
 * normalize.ts refuses (400) what is not in it, so the two cannot disagree.
 */

/** OpenRouter's `supported_features` values we can declare. */
export type Feature = "tools" | "json_mode" | "structured_outputs" | "logprobs";
/** OpenRouter's `supported_sampling_parameters` values (request field names). */
export type SamplingParameter =
  | "temperature"
  | "top_p"
  | "top_k"
  | "min_p"
  | "frequency_penalty"
  | "presence_penalty"
  | "repetition_penalty"
  | "logit_bias"
  | "stop"
  | "seed"
  | "max_tokens";

export interface Capabilities {
  features: readonly Feature[];
  samplingParameters: readonly SamplingParameter[];
  /**
   * Whether a request that lets the model choose to call a tool (`tool_choice` auto) may also
   * ask for logprobs or a response_format.
   */
  toolsWithLogprobsOrFormat: boolean;
  /** Log probabilities of prompt tokens (legacy completions with `echo` and `logprobs`). */
  promptLogprobs: boolean;
  /** JSON schemas are limited to the subset a grammar enforces (protocol/json-schema.ts). */
  grammarSchemas: boolean;
  embeddings: boolean;
}

const ALL_SAMPLING: readonly SamplingParameter[] = [
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "frequency_penalty",
  "presence_penalty",
  "repetition_penalty",
  "logit_bias",
  "stop",
  "seed",
  "max_tokens",
];

/** A vLLM / SGLang-style OpenAI-compatible server, which implements all of these. */
const OPENAI_COMPATIBLE: Capabilities = {
  features: ["tools", "json_mode", "structured_outputs", "logprobs"],
  samplingParameters: ALL_SAMPLING,
  toolsWithLogprobsOrFormat: true,
  // An upstream with `echo` would return the prompt in its text; not relayed yet.
  promptLogprobs: false,
  grammarSchemas: false,
  embeddings: true,
};

const BY_ENGINE: Record<ChuteRecord["engine"], Capabilities> = {
  // node-llama-cpp: sampling options, GBNF grammars for JSON and tool calls, token probabilities.
  "llama-cpp": {
    features: ["tools", "json_mode", "structured_outputs", "logprobs"],
    samplingParameters: ALL_SAMPLING,
    // node-llama-cpp's function calling (LlamaChat) reports no token probabilities and takes
    // no grammar of ours.
    toolsWithLogprobsOrFormat: false,
    promptLogprobs: true,
    grammarSchemas: true,
    embeddings: true,
  },
  // Forwarded to the miner's own server, or to one the agent launched (vLLM, SGLang).
  "openai-upstream": OPENAI_COMPATIBLE,
  vllm: OPENAI_COMPATIBLE,
  sglang: OPENAI_COMPATIBLE,
};

export function capabilitiesOf(chute: Pick<ChuteRecord, "engine">): Capabilities {
  return BY_ENGINE[chute.engine];
}
