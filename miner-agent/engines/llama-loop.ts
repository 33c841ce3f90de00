import { LlamaGrammarEvaluationState } from "node-llama-cpp";
import type { LlamaContextSequence, LlamaGrammar, LlamaModel, Token } from "node-llama-cpp";
import type { FinishReason, SamplingParams, TokenLogprob } from "../../protocol/index.ts";
import { samplingOf, tokenLogprob } from "./llama-sampling.ts";

/** Tokens of recent context used to detokenize a new piece (keeps SPM leading spaces right). */
const DETOKENIZE_CONTEXT_TOKENS = 16;
/** A UTF-8 character spans at most 4 byte tokens; wait that long for it to complete. */
const MAX_PARTIAL_CHAR_TOKENS = 4;
const REPLACEMENT_CHAR = "\uFFFD";

export function abortError(): DOMException {
  return new DOMException("The operation was aborted", "AbortError");
}

export interface LoopOptions {
  params: SamplingParams;
  /** Generate at most this many tokens (the job's max_tokens, capped by the context). */
  maxTokens: number;
  signal: AbortSignal;
  /**
   * The grammar to sample under; a function is asked before every token, so a caller can move
   * from one grammar to the next mid-generation (tool name, then its arguments).
   */
  grammar?: LlamaGrammar | (() => LlamaGrammarEvaluationState | undefined);
  /**
   * True for a chat answer: its text starts fresh (no leading space carried over from the
   * prompt, as node-llama-cpp's LlamaChat decodes it); false continues the prompt's text.
   */
  freshText?: boolean;
  /** The tokens before the generated text when `input` is only the prompt's tail (detokenizing). */
  context?: Token[];
  /**
   * Receives each decoded piece (whole characters) with its token count and, when asked for,
   * logprobs. Returns true to end generation.
   */
  onPiece(text: string, tokens: number, logprobs: TokenLogprob[] | undefined): boolean;
}

export interface LoopResult {
  /** "stop" when the model (or its grammar) ended the text, "length" at max tokens. */
  finishReason: Exclude<FinishReason, "tool_calls">;
  /** Tokens sampled (the usage at max_tokens). */
  generated: number;
}

/**
 * Evaluates `input` on `sequence` and samples until an end-of-generation token, `maxTokens`, a
 * true from `onPiece`, or an abort. Byte tokens of one character are decoded together.
 */
export async function generateTokens(model: LlamaModel, sequence: LlamaContextSequence, input: Token[], opts: LoopOptions): Promise<LoopResult> {
  const generated: Token[] = [];
  const sampling = samplingOf(opts.params, model, generated);
  const top = opts.params.logprobs?.top;
  const grammar = opts.grammar;
  const grammarEvaluationState = grammar === undefined ? undefined
    : typeof grammar === "function" ? grammar : new LlamaGrammarEvaluationState({ model, grammar });
  let recent = opts.freshText ? [] : (opts.context ?? input).slice(-DETOKENIZE_CONTEXT_TOKENS);
  let pending: Token[] = [];
  let pendingLogprobs: TokenLogprob[] | undefined = top === undefined ? undefined : [];
  let finishReason: LoopResult["finishReason"] = "length";
  if (opts.signal.aborted) throw abortError();
  const evaluation = sequence.evaluateWithMetadata(input, { probabilities: top !== undefined }, {
    ...sampling,
    ...(grammarEvaluationState ? { grammarEvaluationState } : {}),
    yieldEogToken: true,
  });
  for await (const out of evaluation) {
    if (opts.signal.aborted) throw abortError();
    const token = out.token;
    if (model.isEogToken(token)) {
      finishReason = "stop";
      break;
    }
    const probabilities = (out as { probabilities?: Map<Token, number> }).probabilities;
    if (pendingLogprobs && probabilities) {
      pendingLogprobs.push(tokenLogprob(model, token, probabilities, top ?? 0, [...recent, ...pending]));
    }
    generated.push(token);
    pending.push(token);
    const text = model.detokenize(pending, false, recent);
    const done = generated.length >= opts.maxTokens;
    // Byte-fallback tokens of a multi-byte character: wait for the rest of the character.
    if (!done && text.endsWith(REPLACEMENT_CHAR) && pending.length < MAX_PARTIAL_CHAR_TOKENS) continue;
    recent = [...recent, ...pending].slice(-DETOKENIZE_CONTEXT_TOKENS);
    const tokens = pending.length;
    const logprobs = pendingLogprobs;
    pending = [];
    pendingLogprobs = top === undefined ? undefined : [];
    if (opts.onPiece(text, tokens, logprobs) || done) break;
  }
  if (pending.length > 0) opts.onPiece(model.detokenize(pending, false, recent), pending.length, pendingLogprobs);
  return { finishReason, generated: generated.length };
}

/**
 * Holds back whitespace at the end of grammar-constrained JSON (a JSON grammar lets the model
 * pad the document with newlines before it must stop): released when more text follows,
 * dropped (its tokens still counted) when generation ends.
 */
export class TrailingWhitespace {
  private text = "";
  private tokens = 0;
  private logprobs: TokenLogprob[] = [];

  constructor(private readonly emit: (text: string, tokens: number, logprobs: TokenLogprob[] | undefined) => boolean) {}

  push(text: string, tokens: number, logprobs: TokenLogprob[] | undefined): boolean {
    this.text += text;
    this.tokens += tokens;
    if (logprobs) this.logprobs.push(...logprobs);
    if (this.text.trim() === "") return false;
    const out = { text: this.text, tokens: this.tokens, logprobs: this.logprobs };
    this.text = "";
    this.tokens = 0;
    this.logprobs = [];
    return this.emit(out.text, out.tokens, logprobs === undefined ? undefined : out.logprobs);
  }

  /** Tokens of the whitespace dropped at the end. */
  get heldTokens(): number {
    return this.tokens;
  }
}
