import { randomInt } from "node:crypto";
import { getLlama, LlamaChat, LlamaLogLevel, resolveChatWrapper } from "node-llama-cpp";
import type {
  ChatHistoryItem,
  ChatWrapper,
  Llama,
  LlamaChatResponseChunk,
  LlamaContext,
  LlamaContextSequence,
  LlamaModel,
  Token,
} from "node-llama-cpp";
import type { ChatMessage, FinishReason, JobSpec, SamplingParams } from "../../protocol/index.ts";
import { EngineError } from "./types.ts";
import type { Engine, GenerateHooks, GenerateResult, LlamaCppEngineConfig } from "./types.ts";

/** Tokens of recent context used to detokenize a new piece (keeps SPM leading spaces right). */
const DETOKENIZE_CONTEXT_TOKENS = 16;
/** A UTF-8 character spans at most 4 byte tokens; wait that long for it to complete. */
const MAX_PARTIAL_CHAR_TOKENS = 4;
const REPLACEMENT_CHAR = "\uFFFD";

function abortError(): DOMException {
  return new DOMException("The operation was aborted", "AbortError");
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Streams generated text to `onDelta`, holding back any tail that could be the start of a stop
 * string, and cutting the output before the first stop string. Every delta carries >= 1 token.
 */
export class DeltaStream {
  private pendingText = "";
  private pendingTokens = 0;
  /** Tokens fed so far (including hidden ones, e.g. thought segments). */
  consumedTokens = 0;
  emittedDeltas = 0;
  stopped = false;

  constructor(
    private readonly stops: readonly string[],
    private readonly onDelta: (text: string, tokens: number) => void,
  ) {}

  /** Feeds one generated piece; returns true once a stop string matched (generation must end). */
  push(text: string, tokens: number): boolean {
    if (this.stopped) return true;
    this.consumedTokens += tokens;
    this.pendingText += text;
    this.pendingTokens += tokens;
    const stopAt = this.firstStopIndex();
    if (stopAt >= 0) {
      this.stopped = true;
      this.release(stopAt, this.pendingTokens);
      return true;
    }
    const safe = this.pendingText.length - this.heldBackLength();
    if (safe === this.pendingText.length) this.release(safe, this.pendingTokens);
    else if (this.pendingTokens > 1) this.release(safe, this.pendingTokens - 1); // 1 token stays with the held text
    return false;
  }

  /** Counts tokens that produce no visible text (e.g. reasoning segments). */
  skip(tokens: number): void {
    this.consumedTokens += tokens;
  }

  /** End of generation without a stop match: release whatever was held back. */
  flush(): void {
    if (!this.stopped) this.release(this.pendingText.length, Math.max(1, this.pendingTokens));
  }

  private release(length: number, tokens: number): void {
    if (length === 0 || tokens === 0) return;
    const text = this.pendingText.slice(0, length);
    this.pendingText = this.pendingText.slice(length);
    this.pendingTokens = Math.max(0, this.pendingTokens - tokens);
    this.emittedDeltas++;
    this.onDelta(text, tokens);
  }

  private firstStopIndex(): number {
    let first = -1;
    for (const stop of this.stops) {
      const i = this.pendingText.indexOf(stop);
      if (i >= 0 && (first < 0 || i < first)) first = i;
    }
    return first;
  }

  /** Length of the longest suffix of the pending text that is a proper prefix of a stop string. */
  private heldBackLength(): number {
    let held = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, this.pendingText.length); k > held; k--) {
        if (this.pendingText.endsWith(stop.slice(0, k))) {
          held = k;
          break;
        }
      }
    }
    return held;
  }
}

interface Sampling {
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  seed: number;
}

/** OpenAI semantics: temperature defaults to 1 (0 = greedy), no top-k/min-p, random seed when unset. */
function samplingOf(params: SamplingParams): Sampling {
  return {
    temperature: params.temperature ?? 1,
    topP: params.topP ?? 1,
    topK: 0,
    minP: 0,
    seed: (params.seed ?? randomInt(2 ** 31)) >>> 0,
  };
}

function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history = messages.map((m): ChatHistoryItem => {
    if (m.role === "user") return { type: "user", text: m.content };
    if (m.role === "assistant") return { type: "model", response: [m.content] };
    return { type: "system", text: m.content };
  });
  // A trailing assistant message is continued; otherwise a new (empty) response is started.
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  return history;
}

interface RunOutcome {
  finishReason: FinishReason;
  /** Tokens sampled for this job (the usage at max_tokens). */
  generated: number;
}

class LlamaCppEngine implements Engine {
  readonly kind = "llama-cpp";
  readonly capacity: number;
  private readonly free: LlamaContextSequence[];
  private closed = false;

  constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly chatWrapper: ChatWrapper,
    parallel: number,
  ) {
    this.capacity = parallel;
    this.free = Array.from({ length: parallel }, () => context.getSequence());
  }

  async generate(spec: JobSpec, hooks: GenerateHooks): Promise<GenerateResult> {
    if (hooks.signal.aborted) throw abortError();
    if (this.closed) throw new EngineError("llama.cpp engine is closed", true);
    const sequence = this.free.pop();
    if (sequence === undefined) throw new EngineError("llama.cpp engine is at capacity", true);
    const stream = new DeltaStream(spec.params.stop ?? [], hooks.onDelta);
    try {
      // A fresh KV state per job: results never depend on what ran on this sequence before.
      await sequence.clearHistory();
      const run = spec.kind === "chat"
        ? this.runChat(sequence, spec.messages, spec.params, stream, hooks)
        : this.runCompletion(sequence, spec.prompt, spec.params, stream, hooks);
      const { promptTokens, outcome } = await run;
      if (hooks.signal.aborted) throw abortError();
      stream.flush();
      const finishReason = stream.stopped ? "stop" : outcome.finishReason;
      // At max_tokens count every sampled token; on a stop, the tokens up to and including it.
      const completionTokens = finishReason === "length"
        ? Math.max(stream.consumedTokens, outcome.generated)
        : stream.consumedTokens;
      return { finishReason, promptTokens, completionTokens };
    } catch (err) {
      if (hooks.signal.aborted) throw abortError();
      if (err instanceof EngineError) throw err;
      throw new EngineError(`llama.cpp: ${errorMessage(err)}`, stream.emittedDeltas === 0);
    } finally {
      this.free.push(sequence);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }

  /** Caps generation so prompt + output fit the sequence (no context shift mid-answer). */
  private budget(sequence: LlamaContextSequence, promptTokens: number, maxTokens: number): number {
    const room = sequence.contextSize - promptTokens - 1;
    if (room < 1) {
      throw new EngineError(`prompt of ${promptTokens} tokens does not fit the ${sequence.contextSize}-token context`, true);
    }
    return Math.min(maxTokens, room);
  }

  private async runChat(
    sequence: LlamaContextSequence,
    messages: readonly ChatMessage[],
    params: SamplingParams,
    stream: DeltaStream,
    { signal, onPrompt }: GenerateHooks,
  ): Promise<{ promptTokens: number; outcome: RunOutcome }> {
    const history = toChatHistory(messages);
    const { contextText } = this.chatWrapper.generateContextState({ chatHistory: history });
    const promptTokens = contextText.tokenize(this.model.tokenizer).length;
    const maxTokens = this.budget(sequence, promptTokens, params.maxTokens);
    onPrompt?.(promptTokens);
    // Stop strings are matched by `stream` (LlamaChat drops held-back text at max_tokens), which
    // then ends LlamaChat's generation through this controller.
    const stopper = new AbortController();
    const onAbort = (): void => stopper.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) stopper.abort();
    const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: this.chatWrapper });
    const outputBefore = sequence.tokenMeter.usedOutputTokens;
    try {
      const onResponseChunk = (chunk: LlamaChatResponseChunk): void => {
        if (chunk.type === "segment") stream.skip(chunk.tokens.length);
        else if (stream.push(chunk.text, chunk.tokens.length)) stopper.abort();
      };
      let stopReason: string;
      try {
        const response = await chat.generateResponse(history, {
          ...samplingOf(params),
          maxTokens,
          repeatPenalty: false,
          signal: stopper.signal,
          stopOnAbortSignal: true,
          onResponseChunk,
        });
        stopReason = response.metadata.stopReason;
      } catch (err) {
        if (!stream.stopped || signal.aborted) throw err;
        stopReason = "abort"; // ended by our stop string
      }
      const finishReason = stopReason === "maxTokens" ? "length" : "stop";
      return { promptTokens, outcome: { finishReason, generated: sequence.tokenMeter.usedOutputTokens - outputBefore } };
    } finally {
      signal.removeEventListener("abort", onAbort);
      chat.dispose();
    }
  }

  private async runCompletion(
    sequence: LlamaContextSequence,
    prompt: string,
    params: SamplingParams,
    stream: DeltaStream,
    { signal, onPrompt }: GenerateHooks,
  ): Promise<{ promptTokens: number; outcome: RunOutcome }> {
    const promptTokens = this.tokenizePrompt(prompt);
    const maxTokens = this.budget(sequence, promptTokens.length, params.maxTokens);
    onPrompt?.(promptTokens.length);
    let recent = promptTokens.slice(-DETOKENIZE_CONTEXT_TOKENS);
    let pending: Token[] = [];
    let generated = 0;
    let finishReason: FinishReason = "length";
    if (signal.aborted) throw abortError();
    const evaluation = sequence.evaluate(promptTokens, { ...samplingOf(params), yieldEogToken: true });
    for await (const token of evaluation) {
      if (signal.aborted) throw abortError();
      if (this.model.isEogToken(token)) {
        finishReason = "stop";
        break;
      }
      generated++;
      pending.push(token);
      const text = this.model.detokenize(pending, false, recent);
      const done = generated >= maxTokens;
      // Byte-fallback tokens of a multi-byte character: wait for the rest of the character.
      if (!done && text.endsWith(REPLACEMENT_CHAR) && pending.length < MAX_PARTIAL_CHAR_TOKENS) continue;
      recent = [...recent, ...pending].slice(-DETOKENIZE_CONTEXT_TOKENS);
      const tokens = pending.length;
      pending = [];
      if (stream.push(text, tokens) || done) break;
    }
    if (pending.length > 0) stream.push(this.model.detokenize(pending, false, recent), pending.length);
    return { promptTokens: promptTokens.length, outcome: { finishReason, generated } };
  }

  /** Prompt text is plain text (special-token syntax in it is not parsed), with BOS when the model wants one. */
  private tokenizePrompt(prompt: string): Token[] {
    const tokens = this.model.tokenize(prompt, false);
    const bos = this.model.tokens.bos;
    if (bos !== null && this.model.tokens.shouldPrependBosToken && tokens[0] !== bos) tokens.unshift(bos);
    if (tokens.length === 0) throw new EngineError("empty prompt and the model has no BOS token", false);
    return tokens;
  }
}

export async function createLlamaCppEngine(config: LlamaCppEngineConfig): Promise<Engine> {
  if (!Number.isInteger(config.parallel) || config.parallel < 1) throw new Error("llama-cpp: parallel must be >= 1");
  const threads = config.threads ?? 1;
  const llama = await getLlama({
    build: "never",
    gpu: config.gpu ?? false,
    maxThreads: threads,
    logLevel: LlamaLogLevel.warn,
  });
  try {
    const model = await llama.loadModel({ modelPath: config.modelPath, gpuLayers: config.gpu === "auto" ? "auto" : 0 });
    const context = await model.createContext({
      sequences: config.parallel,
      contextSize: config.contextSize,
      threads,
    });
    const chatWrapper = resolveChatWrapper(model);
    return new LlamaCppEngine(llama, model, context, chatWrapper, config.parallel);
  } catch (err) {
    await llama.dispose();
    throw err;
  }
}
