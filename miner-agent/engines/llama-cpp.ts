import { getLlama, LlamaChat, LlamaLogLevel, resolveChatWrapper } from "node-llama-cpp";
import type {
  ChatWrapper,
  GbnfJsonSchema,
  Llama,
  LlamaChatResponseChunk,
  LlamaChatResponseFunctionCallParamsChunk,
  LlamaContext,
  LlamaContextSequence,
  LlamaEmbeddingContext,
  LlamaGrammar,
  LlamaModel,
  Token,
} from "node-llama-cpp";
import type { ChatJobSpec, FinishReason, JobSpec, ResponseFormat, SamplingParams, TokenLogprob } from "../../protocol/index.ts";
import { log } from "../log.ts";
import { DeltaStream } from "./delta-stream.ts";
import { functionsOf, grammarSchema, newToolCallId, toChatHistory } from "./llama-chat-history.ts";
import { SequencePool } from "./llama-sequences.ts";
import { generateForcedToolCall } from "./llama-tool-call.ts";
import { abortError, generateTokens, TrailingWhitespace } from "./llama-loop.ts";
import { samplingOf, tokenLogprob } from "./llama-sampling.ts";
import { EngineError } from "./types.ts";
import type { EmbedResult, Engine, GenerateHooks, GenerateResult, LlamaCppEngineConfig } from "./types.ts";

export { DeltaStream };

/** Compiled grammars kept per engine (compiling a schema costs more than sampling a few tokens). */
const GRAMMAR_CACHE_SIZE = 64;

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

interface RunOutcome {
  finishReason: FinishReason;
  /** Tokens sampled for this job (the usage at max_tokens). */
  generated: number;
}

interface Run {
  promptTokens: number;
  outcome: RunOutcome;
}

/** Forced tool calls: `required` (the model picks the tool) or a named tool. */
function forcedTools(spec: ChatJobSpec): ChatJobSpec["tools"] {
  const choice = spec.toolChoice;
  if (!spec.tools || choice === undefined || choice === "none" || choice === "auto") return undefined;
  return choice === "required" ? spec.tools : spec.tools.filter((t) => t.name === choice.name);
}

class LlamaCppEngine implements Engine {
  readonly kind = "llama-cpp";
  readonly capacity: number;
  private readonly sequences: SequencePool;
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  private embedding: Promise<LlamaEmbeddingContext> | null = null;
  private closed = false;

  constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly chatWrapper: ChatWrapper,
    private readonly config: LlamaCppEngineConfig,
  ) {
    this.capacity = config.parallel;
    this.sequences = new SequencePool(context, config.parallel, (err) => {
      // The sequence goes to its next job uncleared, and that job clears it first.
      if (!this.closed) log.warn("engine.sequence_clear_failed", { engine: this.kind, error: errorMessage(err) });
    });
  }

  async generate(spec: JobSpec, hooks: GenerateHooks): Promise<GenerateResult> {
    if (hooks.signal.aborted) throw abortError();
    if (this.closed) throw new EngineError("llama.cpp engine is closed", true);
    const taken = this.sequences.take();
    if (taken === null) throw new EngineError("llama.cpp engine is at capacity", true);
    const sequence = await taken;
    const stream = new DeltaStream(spec.params.stop ?? [], hooks.onDelta);
    let toolTokens = 0;
    const counted: GenerateHooks = {
      ...hooks,
      onToolCall: (delta, tokens) => {
        toolTokens += tokens;
        hooks.onToolCall?.(delta, tokens);
      },
    };
    try {
      // A fresh KV state per job: results never depend on what ran on this sequence before
      // (the pool clears a sequence as its job ends; this is for one whose clear failed).
      if (sequence.nextTokenIndex > 0) await sequence.clearHistory();
      const { promptTokens, outcome } = await this.run(sequence, spec, stream, counted);
      if (hooks.signal.aborted) throw abortError();
      stream.flush();
      const finishReason = stream.stopped ? "stop" : outcome.finishReason;
      // At max_tokens count every sampled token; on a stop, the tokens up to and including it.
      const delivered = stream.consumedTokens + toolTokens;
      const completionTokens = finishReason === "length" ? Math.max(delivered, outcome.generated) : delivered;
      // Every job starts from a cleared sequence: no prompt token comes from a cache.
      return { finishReason, promptTokens, completionTokens, cachedPromptTokens: 0 };
    } catch (err) {
      if (hooks.signal.aborted) throw abortError();
      if (err instanceof EngineError) throw err;
      throw new EngineError(`llama.cpp: ${errorMessage(err)}`, stream.emittedDeltas === 0 && toolTokens === 0);
    } finally {
      this.sequences.give(sequence);
    }
  }

  async embed(input: readonly string[], signal: AbortSignal): Promise<EmbedResult> {
    if (this.closed) throw new EngineError("llama.cpp engine is closed", true);
    this.embedding ??= this.model.createEmbeddingContext({ contextSize: this.config.contextSize, threads: this.config.threads ?? 1 });
    const context = await this.embedding;
    const vectors: Float32Array[] = [];
    let promptTokens = 0;
    for (const text of input) {
      if (signal.aborted) throw abortError();
      const tokens = this.model.tokenize(text);
      promptTokens += tokens.length;
      if (tokens.length >= this.config.contextSize) {
        throw new EngineError(`input of ${tokens.length} tokens does not fit the ${this.config.contextSize}-token context`, false, "invalid_request");
      }
      vectors.push(Float32Array.from((await context.getEmbeddingFor(tokens)).vector));
    }
    return { vectors, promptTokens };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.embedding) await (await this.embedding.catch(() => null))?.dispose();
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }

  private run(sequence: LlamaContextSequence, spec: JobSpec, stream: DeltaStream, hooks: GenerateHooks): Promise<Run> {
    if (spec.kind === "completion") return this.runCompletion(sequence, spec.prompt, spec.params, stream, hooks);
    const forced = forcedTools(spec);
    if (forced) return this.runForcedToolCall(sequence, spec, forced, hooks);
    if (spec.tools && spec.toolChoice !== "none" && (spec.responseFormat || spec.params.logprobs)) {
      // LlamaChat's function calling takes no grammar of ours and reports no probabilities.
      throw new EngineError("tools the model may call cannot be combined with response_format or logprobs", false, "invalid_request");
    }
    if (spec.params.logprobs) return this.runChatWithLogprobs(sequence, spec, stream, hooks);
    return this.runChat(sequence, spec, stream, hooks);
  }

  private grammarFor(schema: GbnfJsonSchema | "json"): Promise<LlamaGrammar> {
    const key = schema === "json" ? "json" : JSON.stringify(schema);
    let grammar = this.grammars.get(key);
    if (!grammar) {
      grammar = schema === "json"
        ? this.llama.getGrammarFor("json")
        : compileJsonSchema(this.llama, schema);
      grammar.catch(() => this.grammars.delete(key));
      if (this.grammars.size >= GRAMMAR_CACHE_SIZE) this.grammars.delete(this.grammars.keys().next().value!);
      this.grammars.set(key, grammar);
    }
    return grammar;
  }

  private async responseGrammar(format: ResponseFormat | undefined): Promise<LlamaGrammar | undefined> {
    if (!format) return undefined;
    try {
      return await this.grammarFor(format.type === "json_object" ? "json" : grammarSchema(format.schema, "response_format"));
    } catch (err) {
      if (err instanceof EngineError) throw err;
      throw new EngineError(`response_format: the schema cannot be compiled: ${errorMessage(err)}`, false, "invalid_request");
    }
  }

  /** Caps generation so prompt + output fit the sequence (no context shift mid-answer). */
  private budget(sequence: LlamaContextSequence, promptTokens: number, maxTokens: number): number {
    const room = sequence.contextSize - promptTokens - 1;
    if (room < 1) {
      throw new EngineError(`prompt of ${promptTokens} tokens does not fit the ${sequence.contextSize}-token context`, true);
    }
    return Math.min(maxTokens, room);
  }

  /** The rendered chat prompt, with the tools documented in the chat wrapper's syntax. */
  private chatPrompt(spec: ChatJobSpec, withTools: boolean): { history: ReturnType<typeof toChatHistory>; tokens: Token[] } {
    const history = toChatHistory(spec.messages);
    const { contextText } = this.chatWrapper.generateContextState({
      chatHistory: history,
      ...(withTools && spec.tools ? { availableFunctions: functionsOf(spec.tools), documentFunctionParams: true } : {}),
    });
    return { history, tokens: contextText.tokenize(this.model.tokenizer) };
  }

  /** Text, JSON under a grammar, or tool calls the model chooses to make (node-llama-cpp function calling). */
  private async runChat(sequence: LlamaContextSequence, spec: ChatJobSpec, stream: DeltaStream, hooks: GenerateHooks): Promise<Run> {
    const { signal, onPrompt } = hooks;
    const tools = spec.toolChoice !== "none" ? spec.tools : undefined;
    const { history, tokens } = this.chatPrompt(spec, tools !== undefined);
    const promptTokens = tokens.length;
    const maxTokens = this.budget(sequence, promptTokens, spec.params.maxTokens);
    const grammar = await this.responseGrammar(spec.responseFormat);
    onPrompt?.(promptTokens);
    // Stop strings are matched by `stream` (LlamaChat drops held-back text at max_tokens), which
    // then ends LlamaChat's generation through this controller.
    const stopper = new AbortController();
    const onAbort = (): void => stopper.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) stopper.abort();
    const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: this.chatWrapper });
    const outputBefore = sequence.tokenMeter.usedOutputTokens;
    const { temperature, topP, topK, minP, seed, tokenBias } = samplingOf(spec.params, this.model, []);
    const { presencePenalty, frequencyPenalty, repetitionPenalty } = spec.params;
    const penalized = presencePenalty || frequencyPenalty || (repetitionPenalty !== undefined && repetitionPenalty !== 1);
    // Tokens sampled but not yet part of a delta (function-call syntax, parameters).
    let sampled = 0;
    let reported = 0;
    const calls = new Map<number, boolean>();
    try {
      const onResponseChunk = (chunk: LlamaChatResponseChunk): void => {
        reported += chunk.tokens.length;
        if (chunk.type === "segment") stream.skip(chunk.tokens.length);
        else if (stream.push(chunk.text, chunk.tokens.length)) stopper.abort();
      };
      const onFunctionCallParamsChunk = (chunk: LlamaChatResponseFunctionCallParamsChunk): void => {
        const tokens = Math.max(0, sampled - reported);
        reported += tokens;
        if (!calls.has(chunk.callIndex)) {
          calls.set(chunk.callIndex, true);
          hooks.onToolCall?.({ index: chunk.callIndex, id: newToolCallId(), name: chunk.functionName, arguments: "" }, 0);
        }
        if (chunk.paramsChunk !== "" || tokens > 0) hooks.onToolCall?.({ index: chunk.callIndex, arguments: chunk.paramsChunk }, tokens);
      };
      let stopReason: string;
      try {
        const common = {
          temperature, topP, topK, minP, seed,
          ...(tokenBias ? { tokenBias } : {}),
          maxTokens,
          repeatPenalty: penalized
            ? { lastTokens: maxTokens, penalty: repetitionPenalty ?? 1, frequencyPenalty: frequencyPenalty ?? 0, presencePenalty: presencePenalty ?? 0, penalizeNewLine: true }
            : (false as const),
          signal: stopper.signal,
          stopOnAbortSignal: true,
          onResponseChunk,
          onToken: (t: Token[]) => void (sampled += t.length),
        };
        const response = tools
          ? await chat.generateResponse(history, {
              ...common,
              functions: functionsOf(tools),
              documentFunctionParams: true,
              ...(spec.parallelToolCalls === false ? { maxParallelFunctionCalls: 1 } : {}),
              onFunctionCallParamsChunk,
            })
          : await chat.generateResponse(history, { ...common, ...(grammar ? { grammar, trimWhitespaceSuffix: true } : {}) });
        stopReason = response.metadata.stopReason;
        if ((response.functionCalls?.length ?? 0) > 0) stopReason = "functionCalls";
      } catch (err) {
        if (!stream.stopped || signal.aborted) throw err;
        stopReason = "abort"; // ended by our stop string
      }
      const finishReason = stopReason === "maxTokens" ? "length" : stopReason === "functionCalls" ? "tool_calls" : "stop";
      return { promptTokens, outcome: { finishReason, generated: sequence.tokenMeter.usedOutputTokens - outputBefore } };
    } finally {
      signal.removeEventListener("abort", onAbort);
      chat.dispose();
    }
  }

  /** Chat with per-token log probabilities: sampled directly on the sequence, which reports them. */
  private async runChatWithLogprobs(sequence: LlamaContextSequence, spec: ChatJobSpec, stream: DeltaStream, hooks: GenerateHooks): Promise<Run> {
    const { tokens } = this.chatPrompt(spec, false);
    const maxTokens = this.budget(sequence, tokens.length, spec.params.maxTokens);
    const grammar = await this.responseGrammar(spec.responseFormat);
    hooks.onPrompt?.(tokens.length);
    const trailing = grammar ? new TrailingWhitespace((text, n, lp) => stream.push(text, n, lp)) : null;
    const outcome = await generateTokens(this.model, sequence, tokens, {
      params: spec.params,
      maxTokens,
      signal: hooks.signal,
      freshText: true,
      ...(grammar ? { grammar } : {}),
      onPiece: (text, n, lp) => (trailing ? trailing.push(text, n, lp) : stream.push(text, n, lp)),
    });
    if (trailing) stream.skip(trailing.heldTokens);
    return { promptTokens: tokens.length, outcome };
  }

  /** A tool call the request requires (see generateForcedToolCall). */
  private async runForcedToolCall(sequence: LlamaContextSequence, spec: ChatJobSpec, tools: NonNullable<ChatJobSpec["tools"]>, hooks: GenerateHooks): Promise<Run> {
    const { tokens } = this.chatPrompt(spec, true);
    const maxTokens = this.budget(sequence, tokens.length, spec.params.maxTokens);
    hooks.onPrompt?.(tokens.length);
    const outcome = await generateForcedToolCall({
      model: this.model,
      sequence,
      input: tokens,
      maxTokens,
      params: spec.params,
      tools,
      hooks,
      grammarFor: (schema) => this.grammarFor(schema),
    });
    return { promptTokens: tokens.length, outcome };
  }

  private async runCompletion(sequence: LlamaContextSequence, prompt: string, params: SamplingParams, stream: DeltaStream, hooks: GenerateHooks): Promise<Run> {
    const tokens = this.tokenizePrompt(prompt);
    const maxTokens = this.budget(sequence, tokens.length, params.maxTokens);
    hooks.onPrompt?.(tokens.length);
    // With prompt logprobs, all but the last prompt token are evaluated here (with each next
    // token's probabilities); generation then starts from the last one.
    const input = params.logprobs?.prompt ? await this.promptLogprobs(sequence, tokens, params.logprobs.top, hooks) : tokens;
    const outcome = await generateTokens(this.model, sequence, input, {
      params,
      maxTokens,
      signal: hooks.signal,
      context: tokens,
      onPiece: (text, n, lp) => stream.push(text, n, lp),
    });
    return { promptTokens: tokens.length, outcome };
  }

  /**
   * The log probability of each prompt text token given the ones before it (the first, with
   * nothing before it, has none). Evaluates all but the last prompt token; returns the rest.
   */
  private async promptLogprobs(sequence: LlamaContextSequence, tokens: Token[], top: number, hooks: GenerateHooks): Promise<Token[]> {
    const bos = this.model.tokens.bos;
    const first = tokens[0] === bos ? 1 : 0; // BOS is not text
    const outputs = tokens.length > 1
      ? await sequence.controlledEvaluate(tokens.slice(0, -1).map((t) => [t, { generateNext: { probabilities: true } }]))
      : [];
    const logprobs: TokenLogprob[] = [];
    for (let i = first; i < tokens.length; i++) {
      const context = tokens.slice(first, i);
      const probabilities = i > 0 ? outputs[i - 1]?.next.probabilities : undefined;
      if (probabilities) logprobs.push(tokenLogprob(this.model, tokens[i]!, probabilities, top, context));
      else {
        const text = this.model.detokenize([tokens[i]!], false, context);
        logprobs.push({ token: text, logprob: null, bytes: [...new TextEncoder().encode(text)], top: [] });
      }
    }
    hooks.onPromptLogprobs?.(logprobs);
    return tokens.slice(-1);
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

/**
 * `llama.createGrammarForJsonSchema` for a schema known only at run time (its signature infers
 * a literal schema type, which a client's schema does not have).
 */
const compileJsonSchema = (llama: Llama, schema: GbnfJsonSchema): Promise<LlamaGrammar> =>
  (llama.createGrammarForJsonSchema as (schema: GbnfJsonSchema) => Promise<LlamaGrammar>).call(llama, schema);

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
    return new LlamaCppEngine(llama, model, context, chatWrapper, config);
  } catch (err) {
    await llama.dispose();
    throw err;
  }
}
