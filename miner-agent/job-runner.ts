import { choicesOf, type AgentFrame, type EmbeddingVector, type JobSpec, type TokenLogprob, type ToolCallDelta, type Usage } from "../protocol/index.ts";
import type { Engine } from "./engines/index.ts";
import type { GenerateResult } from "./engines/types.ts";
import { EngineError } from "./engines/types.ts";
import { log } from "./log.ts";

/** An instance as the job runner sees it: its engine and its counters. */
export interface ServedInstance {
  chute: string;
  instanceId: string;
  engine: Engine;
  active: number;
  requestsServed: number;
  tokensServed: number;
}

/** One choice of a running job (most jobs have one): its output on the way to the gateway. */
interface RunningJob {
  id: string;
  /** Jobs with several choices: this one's index (sent with each of its frames). */
  choice: number | undefined;
  instance: ServedInstance;
  /** Shared by the job's choices: the gateway's cancel. */
  abort: AbortController;
  startedAt: number;
  ttftMs: number | null;
  pendingText: string;
  pendingTokens: number;
  /** Tool-call pieces and logprobs waiting for the next frame (jobs that asked for them). */
  pendingToolCalls: ToolCallDelta[];
  pendingLogprobs: TokenLogprob[];
  sentTokens: number;
  /** The prompt's token count (and logprobs, when asked for), sent with the first chunk. */
  promptTokens: number | undefined;
  promptLogprobs: TokenLogprob[] | undefined;
  flushScheduled: boolean;
  /** When this job's last chunk frame went out (performance.now()). */
  lastFrameAt: number;
}

/** Embedding vectors are sent in frames of at most about this many bytes (the frame limit is 1 MiB). */
const EMBEDDING_FRAME_BYTES = 512 * 1024;
/**
 * A job that sent a chunk frame within this long waits for the next tick of a clock shared by all
 * jobs (ticks this far apart) for its next one; otherwise its output goes at once (so its first
 * one does). An engine that yields one token at a time would otherwise cost a frame, a
 * validation and an SSE event per token at every hop, and jobs streaming together share a
 * message. At most 20 frames a second per job is still a smooth stream. A stream paced by its
 * engine costs the gateway about a WebSocket message per frame (and more per message the slower
 * they come): at 50 ms a llama.cpp stream cost workerd 25-35% less CPU than at 20 ms, and the
 * agent's main thread 1-1.5 ms less per 256-token stream.
 */
export const FRAME_INTERVAL_MS = 50;
/** Deltas are coalesced into one frame until this many bytes are pending. */
const MAX_PENDING_BYTES = 256 * 1024;
/** While the socket has this much queued, keep coalescing instead of sending more frames. */
const SOCKET_HIGH_WATER = 1 << 20;
/**
 * The bound on the outbound buffer: a job whose pending output is full while the socket has
 * this much queued (the gateway is not reading) is ended with an error instead of queueing more.
 */
export const OUTBOUND_LIMIT = 16 << 20;

/**
 * Runs jobs on engines and streams their output back: deltas that arrive together go out as
 * one frame, the socket's backlog is bounded, and a cancel stops generation.
 */
export class JobRunner {
  private readonly jobs = new Map<string, RunningJob>();
  /** Jobs whose pending output goes out on the next shared tick. */
  private readonly due = new Set<RunningJob>();
  private tick: NodeJS.Timeout | null = null;

  constructor(
    private readonly send: (frame: AgentFrame) => boolean,
    private readonly bufferedAmount: () => number,
  ) {}

  get inflight(): number {
    return this.jobs.size;
  }

  has(id: string): boolean {
    return this.jobs.has(id);
  }

  cancel(id: string): void {
    this.jobs.get(id)?.abort.abort(new Error("cancelled by gateway"));
  }

  abortAll(reason: string): void {
    for (const job of this.jobs.values()) job.abort.abort(new Error(reason));
  }

  async run(inst: ServedInstance, id: string, spec: JobSpec, traceId: string | undefined): Promise<void> {
    const choices = choicesOf(spec);
    const multi = choices.length > 1;
    const abort = new AbortController();
    const startedAt = performance.now();
    const streams: RunningJob[] = choices.map((c) => ({
      id,
      choice: multi ? c.index : undefined,
      instance: inst,
      abort,
      startedAt,
      ttftMs: null,
      pendingText: "",
      pendingTokens: 0,
      pendingToolCalls: [],
      pendingLogprobs: [],
      sentTokens: 0,
      promptTokens: undefined,
      promptLogprobs: undefined,
      flushScheduled: false,
      lastFrameAt: -Infinity,
    }));
    const job = streams[0]!;
    const sent = () => streams.reduce((n, s) => n + s.sentTokens, 0);
    const ttft = () => streams.reduce<number | null>((t, s) => (s.ttftMs !== null && (t === null || s.ttftMs < t) ? s.ttftMs : t), null);
    this.jobs.set(id, job);
    inst.active += choices.length;
    let outcome = "ok";
    let usage: Usage = { promptTokens: 0, completionTokens: 0 };
    try {
      if (spec.kind === "completion" && spec.embedding) {
        usage = await this.embed(job, spec.embedding.input);
        if (job.abort.signal.aborted) {
          outcome = "cancelled";
          return;
        }
        this.send({ type: "done", id, finishReason: "stop", usage, timings: { ttftMs: job.ttftMs, durationMs: performance.now() - job.startedAt } });
        return;
      }
      const results = await this.generateAll(inst, choices.map((c) => c.spec), streams);
      // Each prompt's tokens count once, however many choices answer it (as OpenAI counts them).
      const firstOfPrompt = (i: number) => choices.findIndex((c) => c.prompt === choices[i]!.prompt) === i;
      usage = { promptTokens: 0, completionTokens: 0 };
      results.forEach((r, i) => {
        usage.completionTokens += r.completionTokens;
        if (!firstOfPrompt(i)) return;
        usage.promptTokens += r.promptTokens;
        if (r.cachedPromptTokens !== undefined) usage.cachedPromptTokens = (usage.cachedPromptTokens ?? 0) + r.cachedPromptTokens;
      });
      if (job.abort.signal.aborted) {
        outcome = "cancelled";
        return;
      }
      for (const s of streams) this.flush(s);
      this.send({
        type: "done",
        id,
        finishReason: results[0]!.finishReason,
        ...(multi ? { choices: results.map((r, i) => ({ index: choices[i]!.index, finishReason: r.finishReason })) } : {}),
        usage,
        timings: { ttftMs: ttft(), durationMs: performance.now() - startedAt },
      });
    } catch (err) {
      if (job.abort.signal.aborted) {
        outcome = "cancelled";
        return;
      }
      outcome = "error";
      for (const s of streams) this.flush(s);
      const message = err instanceof Error ? err.message : String(err);
      const retryable = sent() === 0 && (!(err instanceof EngineError) || err.retryable);
      const code = err instanceof EngineError ? err.code : "engine_error";
      this.send({ type: "error", id, code, message: message.slice(0, 4000), retryable });
    } finally {
      this.jobs.delete(id);
      inst.active -= choices.length;
      inst.requestsServed++;
      inst.tokensServed += outcome === "ok" ? usage.completionTokens : sent();
      log.info("job.end", {
        id,
        traceId,
        chute: inst.chute,
        instanceId: inst.instanceId,
        outcome,
        ...(multi ? { choices: choices.length } : {}),
        promptTokens: usage.promptTokens,
        completionTokens: outcome === "ok" ? usage.completionTokens : sent() + streams.reduce((n, s) => n + s.pendingTokens, 0),
        ttftMs: ttft(),
        durationMs: Math.round(performance.now() - startedAt),
      });
    }
  }

  /**
   * Generate every choice at once (each on its own sequence of the engine). The first failure
   * stops the others and is what the job fails with.
   */
  private async generateAll(inst: ServedInstance, specs: JobSpec[], streams: RunningJob[]): Promise<GenerateResult[]> {
    const siblings = new AbortController();
    let firstError: unknown = null;
    const settled = await Promise.allSettled(
      specs.map((spec, i) => {
        const s = streams[i]!;
        const signal = specs.length > 1 ? AbortSignal.any([s.abort.signal, siblings.signal]) : s.abort.signal;
        return inst.engine
          .generate(spec, {
            signal,
            onDelta: (text, tokens, logprobs) => this.onDelta(s, text, tokens, logprobs),
            onToolCall: (delta, tokens) => this.onToolCall(s, delta, tokens),
            onPrompt: (n) => {
              s.promptTokens = n;
            },
            onPromptLogprobs: (logprobs) => {
              s.promptLogprobs = logprobs;
            },
          })
          .catch((err: unknown) => {
            if (firstError === null && !siblings.signal.aborted) firstError = err;
            siblings.abort(new Error("another choice of the job failed"));
            throw err;
          });
      }),
    );
    if (settled.some((r) => r.status === "rejected")) throw firstError ?? (settled.find((r) => r.status === "rejected") as PromiseRejectedResult).reason;
    return settled.map((r) => (r as PromiseFulfilledResult<GenerateResult>).value);
  }

  /** An embedding job: vectors go out in chunk frames of bounded size, then usage in `done`. */
  private async embed(job: RunningJob, input: readonly string[]): Promise<{ promptTokens: number; completionTokens: number }> {
    const engine = job.instance.engine;
    if (!engine.embed) throw new EngineError(`the ${engine.kind} engine does not embed`, false, "invalid_request");
    const { vectors, promptTokens } = await engine.embed(input, job.abort.signal);
    if (vectors.length !== input.length) throw new EngineError("the engine returned a vector count unlike the input count", false);
    job.ttftMs = performance.now() - job.startedAt;
    let batch: EmbeddingVector[] = [];
    let bytes = 0;
    const send = (): void => {
      if (batch.length === 0 || job.abort.signal.aborted) return;
      // `tokens` >= 1 per frame; the prompt tokens are in `done`.
      this.send({ type: "chunk", id: job.id, text: "", tokens: batch.length, embeddings: batch });
      batch = [];
      bytes = 0;
    };
    vectors.forEach((v, index) => {
      const base64 = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
      if (bytes + base64.length > EMBEDDING_FRAME_BYTES) send();
      batch.push({ index, base64 });
      bytes += base64.length;
    });
    send();
    return { promptTokens, completionTokens: 0 };
  }

  private onDelta(job: RunningJob, text: string, tokens: number, logprobs?: TokenLogprob[]): void {
    if (job.abort.signal.aborted) return;
    // Text after tool-call pieces goes out in a later frame, so the client sees them in order.
    if (job.pendingToolCalls.length > 0) this.flush(job);
    if (job.ttftMs === null) job.ttftMs = performance.now() - job.startedAt;
    job.pendingText += text;
    job.pendingTokens += tokens;
    if (logprobs) job.pendingLogprobs.push(...logprobs);
    this.scheduleFlush(job);
  }

  /** Tool-call pieces: argument text of one call is merged while it waits for a frame. */
  private onToolCall(job: RunningJob, delta: ToolCallDelta, tokens: number): void {
    if (job.abort.signal.aborted) return;
    if (job.ttftMs === null) job.ttftMs = performance.now() - job.startedAt;
    const last = job.pendingToolCalls.at(-1);
    // A call's first piece (id, name, empty arguments) stays apart, as OpenAI streams it.
    if (last && last.index === delta.index && last.id === undefined && delta.id === undefined) last.arguments += delta.arguments;
    else job.pendingToolCalls.push({ ...delta });
    job.pendingTokens += tokens;
    this.scheduleFlush(job);
  }

  private scheduleFlush(job: RunningJob): void {
    const bytes = job.pendingText.length + job.pendingToolCalls.reduce((n, c) => n + c.arguments.length, 0);
    if (bytes >= MAX_PENDING_BYTES) {
      if (this.bufferedAmount() > OUTBOUND_LIMIT) return this.overflow(job);
      return this.flush(job);
    }
    if (job.flushScheduled) return;
    job.flushScheduled = true;
    // Due now: once the deltas of the engine's current read are in (a microtask, not a turn of
    // the event loop later: the first token reaches the gateway sooner; bench:ab paced TTFT p50
    // -2.8% and -1.4%).
    if (performance.now() - job.lastFrameAt >= FRAME_INTERVAL_MS) return queueMicrotask(() => this.scheduledFlush(job));
    // Every job waiting for its next frame goes out on one shared tick, so the frames of jobs
    // that stream at once (a batched engine's sequences) leave in the same turn: one message.
    this.due.add(job);
    this.tick ??= setInterval(() => this.onTick(), FRAME_INTERVAL_MS);
  }

  /** The shared tick: runs while jobs wait for it, and stops at the first tick none does. */
  private onTick(): void {
    if (this.due.size === 0) {
      clearInterval(this.tick ?? undefined);
      this.tick = null;
      return;
    }
    const due = [...this.due];
    this.due.clear();
    for (const job of due) this.scheduledFlush(job);
  }

  private scheduledFlush(job: RunningJob): void {
    job.flushScheduled = false;
    if (this.bufferedAmount() > SOCKET_HIGH_WATER && this.jobs.has(job.id)) {
      job.flushScheduled = true;
      setTimeout(() => this.scheduledFlush(job), 5);
      return;
    }
    this.flush(job);
  }

  /** The gateway is not reading: stop generating, and say so (after what is already queued). */
  private overflow(job: RunningJob): void {
    log.error("job.outbound_full", { id: job.id, queuedBytes: this.bufferedAmount(), sentTokens: job.sentTokens });
    this.send({ type: "error", id: job.id, code: "engine_error", message: "The miner's outbound buffer is full: the gateway is not reading the stream.", retryable: false });
    job.abort.abort(new Error("outbound buffer full"));
  }

  /** Send what is pending as one chunk frame. */
  private flush(job: RunningJob): void {
    if (job.pendingTokens === 0 || job.abort.signal.aborted) return;
    const first = job.sentTokens === 0
      ? { ...(job.promptTokens !== undefined ? { promptTokens: job.promptTokens } : {}), ...(job.promptLogprobs ? { promptLogprobs: job.promptLogprobs } : {}) }
      : {};
    const toolCalls = job.pendingToolCalls.length > 0 ? { toolCalls: job.pendingToolCalls } : {};
    const logprobs = job.pendingLogprobs.length > 0 ? { logprobs: job.pendingLogprobs } : {};
    const choice = job.choice !== undefined ? { choice: job.choice } : {};
    this.send({ type: "chunk", id: job.id, text: job.pendingText, tokens: job.pendingTokens, ...choice, ...first, ...toolCalls, ...logprobs });
    job.sentTokens += job.pendingTokens;
    job.lastFrameAt = performance.now();
    job.pendingText = "";
    job.pendingTokens = 0;
    job.pendingToolCalls = [];
    job.pendingLogprobs = [];
  }

}
