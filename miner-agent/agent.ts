import type { EmbeddingVector, GatewayFrame, JobSpec, TokenLogprob, ToolCallDelta, Usage } from "../protocol/index.ts";
import type { ResolvedConfig } from "./config.ts";
import { GatewayConnection } from "./connection.ts";
import { createEngine, type Engine } from "./engines/index.ts";
import { EngineError } from "./engines/types.ts";
import { log } from "./log.ts";

interface Instance {
  chute: string;
  instanceId: string;
  engine: Engine;
  active: number;
}

interface RunningJob {
  id: string;
  instance: Instance;
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
}

/** Embedding vectors are sent in frames of at most about this many bytes (the frame limit is 1 MiB). */
const EMBEDDING_FRAME_BYTES = 512 * 1024;
/** Deltas are coalesced into one frame until this many bytes are pending. */
const MAX_PENDING_BYTES = 256 * 1024;
/** While the socket has this much queued, keep coalescing instead of sending more frames. */
const SOCKET_HIGH_WATER = 1 << 20;

/**
 * The miner agent: runs one engine per served chute instance, takes jobs from the gateway,
 * streams their tokens back (deltas that arrive together go out as one frame), and cancels
 * generation when the gateway says the client went away.
 */
export class MinerAgent {
  private readonly instances = new Map<string, Instance>();
  private readonly jobs = new Map<string, RunningJob>();
  private draining = false;
  private readonly conn: GatewayConnection;

  constructor(private readonly config: ResolvedConfig) {
    this.conn = new GatewayConnection({
      gateway: config.gateway,
      minerId: config.minerId,
      token: config.token,
      heartbeatMs: config.heartbeatMs,
      onReady: () => this.announce(),
      onFrame: (frame) => this.onFrame(frame),
      onLost: () => this.abortAll("gateway connection lost"),
    });
  }

  /** Load every engine, then connect. */
  async start(): Promise<void> {
    for (const inst of this.config.instances) {
      const t0 = Date.now();
      const engine = await createEngine(inst.engine);
      this.instances.set(inst.instanceId, { chute: inst.chute, instanceId: inst.instanceId, engine, active: 0 });
      log.info("engine.ready", {
        chute: inst.chute,
        instanceId: inst.instanceId,
        kind: engine.kind,
        capacity: engine.capacity,
        loadMs: Date.now() - t0,
      });
    }
    this.conn.start();
  }

  /** Stop taking work, finish in-flight jobs (up to the drain timeout), then disconnect. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    log.info("agent.draining", { inflight: this.jobs.size });
    this.conn.send({ type: "capacity", instances: [] });
    const deadline = Date.now() + this.config.drainTimeoutMs;
    while (this.jobs.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.abortAll("drain timeout");
    await this.conn.stop();
    for (const inst of this.instances.values()) await inst.engine.close();
    log.info("agent.stopped", {});
  }

  private announce(): void {
    const instances = this.draining
      ? []
      : [...this.instances.values()].map((i) => ({
          instanceId: i.instanceId,
          chute: i.chute,
          maxConcurrency: i.engine.capacity,
        }));
    this.conn.send({ type: "capacity", instances });
  }

  private onFrame(frame: Extract<GatewayFrame, { type: "job" | "cancel" }>): void {
    if (frame.type === "cancel") {
      const job = this.jobs.get(frame.id);
      if (job) job.abort.abort(new Error("cancelled by gateway"));
      return;
    }
    const inst = this.instances.get(frame.instanceId);
    if (!inst || this.draining) {
      this.conn.send({ type: "error", id: frame.id, code: "no_capacity", message: "Instance not served here.", retryable: true });
      return;
    }
    if (inst.active >= inst.engine.capacity || this.jobs.has(frame.id)) {
      this.conn.send({ type: "error", id: frame.id, code: "capacity_exceeded", message: "Instance is full.", retryable: true });
      return;
    }
    void this.run(inst, frame.id, frame.spec, frame.traceId);
  }

  private async run(inst: Instance, id: string, spec: JobSpec, traceId: string | undefined): Promise<void> {
    const job: RunningJob = {
      id,
      instance: inst,
      abort: new AbortController(),
      startedAt: performance.now(),
      ttftMs: null,
      pendingText: "",
      pendingTokens: 0,
      pendingToolCalls: [],
      pendingLogprobs: [],
      sentTokens: 0,
      promptTokens: undefined,
      promptLogprobs: undefined,
      flushScheduled: false,
    };
    this.jobs.set(id, job);
    inst.active++;
    let outcome = "ok";
    let usage: Usage = { promptTokens: 0, completionTokens: 0 };
    try {
      if (spec.kind === "completion" && spec.embedding) {
        usage = await this.embed(job, spec.embedding.input);
        if (job.abort.signal.aborted) {
          outcome = "cancelled";
          return;
        }
        this.conn.send({ type: "done", id, finishReason: "stop", usage, timings: { ttftMs: job.ttftMs, durationMs: performance.now() - job.startedAt } });
        return;
      }
      const result = await inst.engine.generate(spec, {
        signal: job.abort.signal,
        onDelta: (text, tokens, logprobs) => this.onDelta(job, text, tokens, logprobs),
        onToolCall: (delta, tokens) => this.onToolCall(job, delta, tokens),
        onPrompt: (n) => {
          job.promptTokens = n;
        },
        onPromptLogprobs: (logprobs) => {
          job.promptLogprobs = logprobs;
        },
      });
      usage = { promptTokens: result.promptTokens, completionTokens: result.completionTokens };
      if (result.cachedPromptTokens !== undefined) usage.cachedPromptTokens = result.cachedPromptTokens;
      if (job.abort.signal.aborted) {
        outcome = "cancelled";
        return;
      }
      this.flush(job);
      this.conn.send({
        type: "done",
        id,
        finishReason: result.finishReason,
        usage,
        timings: { ttftMs: job.ttftMs, durationMs: performance.now() - job.startedAt },
      });
    } catch (err) {
      if (job.abort.signal.aborted) {
        outcome = "cancelled";
        return;
      }
      outcome = "error";
      this.flush(job);
      const message = err instanceof Error ? err.message : String(err);
      const retryable = job.sentTokens === 0 && (!(err instanceof EngineError) || err.retryable);
      const code = err instanceof EngineError ? err.code : "engine_error";
      this.conn.send({ type: "error", id, code, message: message.slice(0, 4000), retryable });
    } finally {
      this.jobs.delete(id);
      inst.active--;
      log.info("job.end", {
        id,
        traceId,
        chute: inst.chute,
        instanceId: inst.instanceId,
        outcome,
        promptTokens: usage.promptTokens,
        completionTokens: outcome === "ok" ? usage.completionTokens : job.sentTokens + job.pendingTokens,
        ttftMs: job.ttftMs,
        durationMs: Math.round(performance.now() - job.startedAt),
      });
    }
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
      this.conn.send({ type: "chunk", id: job.id, text: "", tokens: batch.length, embeddings: batch });
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
    if (bytes >= MAX_PENDING_BYTES) return this.flush(job);
    if (!job.flushScheduled) {
      job.flushScheduled = true;
      setImmediate(() => this.scheduledFlush(job));
    }
  }

  private scheduledFlush(job: RunningJob): void {
    job.flushScheduled = false;
    if (this.conn.bufferedAmount > SOCKET_HIGH_WATER && this.jobs.has(job.id)) {
      job.flushScheduled = true;
      setTimeout(() => this.scheduledFlush(job), 5);
      return;
    }
    this.flush(job);
  }

  /** Send what is pending as one chunk frame. */
  private flush(job: RunningJob): void {
    if (job.pendingTokens === 0 || job.abort.signal.aborted) return;
    const first = job.sentTokens === 0
      ? { ...(job.promptTokens !== undefined ? { promptTokens: job.promptTokens } : {}), ...(job.promptLogprobs ? { promptLogprobs: job.promptLogprobs } : {}) }
      : {};
    const toolCalls = job.pendingToolCalls.length > 0 ? { toolCalls: job.pendingToolCalls } : {};
    const logprobs = job.pendingLogprobs.length > 0 ? { logprobs: job.pendingLogprobs } : {};
    this.conn.send({ type: "chunk", id: job.id, text: job.pendingText, tokens: job.pendingTokens, ...first, ...toolCalls, ...logprobs });
    job.sentTokens += job.pendingTokens;
    job.pendingText = "";
    job.pendingTokens = 0;
    job.pendingToolCalls = [];
    job.pendingLogprobs = [];
  }

  private abortAll(reason: string): void {
    for (const job of this.jobs.values()) job.abort.abort(new Error(reason));
  }
}
