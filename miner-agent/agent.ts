import type { GatewayFrame, JobSpec } from "../protocol/index.ts";
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
  sentTokens: number;
  /** The prompt's token count, sent with the first chunk. */
  promptTokens: number | undefined;
  flushScheduled: boolean;
}

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
      sentTokens: 0,
      promptTokens: undefined,
      flushScheduled: false,
    };
    this.jobs.set(id, job);
    inst.active++;
    let outcome = "ok";
    let usage = { promptTokens: 0, completionTokens: 0 };
    try {
      const result = await inst.engine.generate(spec, {
        signal: job.abort.signal,
        onDelta: (text, tokens) => this.onDelta(job, text, tokens),
        onPrompt: (n) => {
          job.promptTokens = n;
        },
      });
      usage = { promptTokens: result.promptTokens, completionTokens: result.completionTokens };
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
      this.conn.send({ type: "error", id, code: "engine_error", message: message.slice(0, 4000), retryable });
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

  private onDelta(job: RunningJob, text: string, tokens: number): void {
    if (job.abort.signal.aborted) return;
    if (job.ttftMs === null) job.ttftMs = performance.now() - job.startedAt;
    job.pendingText += text;
    job.pendingTokens += tokens;
    if (job.pendingText.length >= MAX_PENDING_BYTES) return this.flush(job);
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
    const first = job.sentTokens === 0 && job.promptTokens !== undefined ? { promptTokens: job.promptTokens } : {};
    this.conn.send({ type: "chunk", id: job.id, text: job.pendingText, tokens: job.pendingTokens, ...first });
    job.sentTokens += job.pendingTokens;
    job.pendingText = "";
    job.pendingTokens = 0;
  }

  private abortAll(reason: string): void {
    for (const job of this.jobs.values()) job.abort.abort(new Error(reason));
  }
}
