import { randomInt } from "node:crypto";
import { TokenBias } from "node-llama-cpp";
import type { LlamaContextSequenceRepeatPenalty, LlamaModel, Token } from "node-llama-cpp";
import type { SamplingParams, TokenLogprob } from "../../protocol/index.ts";
import { EngineError } from "./types.ts";

/** node-llama-cpp's sampling options for a job's parameters (OpenAI semantics). */
export interface SamplingOptions {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed: number;
  repeatPenalty?: LlamaContextSequenceRepeatPenalty;
  tokenBias?: TokenBias;
}

/** The lowest logprob reported; a probability of 0 has no finite log (OpenAI reports -9999 too). */
const MIN_LOGPROB = -9999;

/**
 * OpenAI defaults: temperature 1 (0 = greedy), no top-k/min-p, a random seed when unset.
 * Penalties apply to the tokens generated so far (`generated`), over the whole answer.
 */
export function samplingOf(params: SamplingParams, model: LlamaModel, generated: Token[]): SamplingOptions {
  const out: SamplingOptions = {
    temperature: params.temperature ?? 1,
    topP: params.topP ?? 1,
    topK: params.topK ?? 0,
    minP: params.minP ?? 0,
    seed: (params.seed ?? randomInt(2 ** 31)) >>> 0,
  };
  const { presencePenalty, frequencyPenalty, repetitionPenalty } = params;
  if (presencePenalty || frequencyPenalty || (repetitionPenalty !== undefined && repetitionPenalty !== 1)) {
    out.repeatPenalty = {
      punishTokens: () => generated,
      maxPunishTokens: params.maxTokens,
      penalty: repetitionPenalty ?? 1,
      frequencyPenalty: frequencyPenalty ?? 0,
      presencePenalty: presencePenalty ?? 0,
    };
  }
  if (params.logitBias && Object.keys(params.logitBias).length > 0) out.tokenBias = tokenBiasOf(params.logitBias, model);
  return out;
}

function vocabularySize(model: LlamaModel): number | null {
  const tokens = (model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: unknown } } }).tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) ? tokens.length : null;
}

/** OpenAI `logit_bias`: added to the token's logit; -100 bans the token. */
function tokenBiasOf(logitBias: Record<string, number>, model: LlamaModel): TokenBias {
  const size = vocabularySize(model);
  const bias = new TokenBias(model.tokenizer);
  for (const [id, value] of Object.entries(logitBias)) {
    const token = Number(id);
    if (size !== null && token >= size) {
      throw new EngineError(`logit_bias: token id ${id} is not in this model's vocabulary of ${size} tokens`, false, "invalid_request");
    }
    bias.set(token as Token, value <= -100 ? "never" : { logit: value });
  }
  return bias;
}

const encoder = new TextEncoder();
const logOf = (p: number): number => (p > 0 ? Math.max(MIN_LOGPROB, Math.log(p)) : MIN_LOGPROB);

/** The chosen token's logprob and the `top` most likely alternatives, from llama.cpp's probabilities. */
export function tokenLogprob(
  model: LlamaModel,
  token: Token,
  probabilities: ReadonlyMap<Token, number>,
  top: number,
  /** The tokens before this one (a piece's leading space depends on them). */
  context: readonly Token[],
): TokenLogprob {
  const text = (t: Token): string => model.detokenize([t], false, context as Token[]);
  const alternatives: TokenLogprob["top"] = [];
  for (const [t, p] of probabilities) {
    if (alternatives.length >= top) break;
    const s = text(t);
    alternatives.push({ token: s, logprob: logOf(p), bytes: [...encoder.encode(s)] });
  }
  const s = text(token);
  return { token: s, logprob: logOf(probabilities.get(token) ?? 0), bytes: [...encoder.encode(s)], top: alternatives };
}
