import { JobEvent } from "../protocol/index.ts";

/**
 * What a MinerSession hands the Worker for one job: the agent's chunk/done/error frames,
 * already validated, each as its JSON text.
 */
export { JobEvent };

/**
 * The answer to `MinerSession.startJob`: the job's first events, and a stream of the rest
 * (NDJSON, one event per line) unless those already end it. A short job is answered whole,
 * without a stream: a stream across the RPC boundary costs more than the job's few events.
 */
export interface JobStart {
  /** Each event's JSON text, in order (at least one unless the job was cancelled). */
  events: string[];
  /** The rest of the job's events, or null when `events` holds its last one. */
  rest: ReadableStream<Uint8Array> | null;
  /** How long the session held the first event before answering (its time to first token is that much earlier). */
  heldMs: number;
}

const encoder = new TextEncoder();

/** An event already in JSON text (one line) as it goes on the stream. */
export function encodeLine(json: string): Uint8Array {
  return encoder.encode(json + "\n");
}

/** Reads a job's events: the ones in the session's answer, then its stream's, line by line. */
export class JobEventReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array> | null;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  // The session validated each event against JobEvent before handing it over (unknown fields
  // may remain; nothing reads them), so the Worker does not validate it again.
  private queue: JobEvent[];
  private lastEventAt = Date.now();
  private silent: Promise<JobEvent> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    start: JobStart,
    /** A job silent for this long ends with an `upstream_timeout` error event. */
    private readonly idleTimeoutMs = Infinity,
  ) {
    this.queue = start.events.map((line) => JSON.parse(line) as JobEvent);
    this.reader = start.rest?.getReader() ?? null;
  }

  /** Whether the next event is already here (next() resolves without waiting for the session). */
  get buffered(): boolean {
    return this.queue.length > 0;
  }

  /** Whether every event of the job is already here (the session answered with the whole job). */
  get complete(): boolean {
    return this.reader === null;
  }

  /**
   * The next event, or null when the stream ended without one. A job silent for the idle timeout
   * gives an `upstream_timeout` error event.
   */
  next(): Promise<JobEvent | null> {
    if (this.queue.length > 0 || !this.reader || this.idleTimeoutMs === Infinity) return this.read();
    return Promise.race([this.read(), this.silence()]);
  }

  /**
   * Settles once the stream has been silent for the idle timeout. One timer for the whole job,
   * not one per event: it is set again only when it fires while events keep coming.
   */
  private silence(): Promise<JobEvent> {
    return (this.silent ??= new Promise<JobEvent>((resolve) => {
      const check = () => {
        const quiet = Date.now() - this.lastEventAt;
        if (quiet < this.idleTimeoutMs) return void (this.timer = setTimeout(check, this.idleTimeoutMs - quiet));
        this.timer = undefined;
        resolve({ type: "error", id: "", code: "upstream_timeout", message: silentFor(this.idleTimeoutMs), retryable: false });
      };
      this.timer = setTimeout(check, this.idleTimeoutMs);
    }));
  }

  private async read(): Promise<JobEvent | null> {
    while (this.queue.length === 0) {
      if (!this.reader) return null;
      const { done, value } = await this.reader.read();
      if (done) {
        this.stopTimer();
        return null;
      }
      this.lastEventAt = Date.now();
      this.buffer += this.decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (line) this.queue.push(JSON.parse(line) as JobEvent);
      }
    }
    return this.queue.shift() ?? null;
  }

  private stopTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  async cancel(reason?: unknown): Promise<void> {
    this.stopTimer();
    await this.reader?.cancel(reason).catch(() => undefined);
  }
}

/** The message of a job that went silent (before its first event, or mid-job). */
export function silentFor(ms: number): string {
  return `The model produced nothing for ${Math.round(ms / 1000)} s.`;
}
