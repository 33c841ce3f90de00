import { silentFor, type JobEvent, type JobEventSink, type JobStart } from "../../durable-objects/job-events.ts";

/**
 * Reads a job's events: the ones in the session's startJob answer, then the ones the session
 * pushes to `sink` (pass it with startJob). A job silent for the idle timeout gives an
 * `upstream_timeout` error event.
 */
export class JobEventReader {
  /** What the session pushes the job's later events to (across RPC, a function becomes a stub). */
  readonly sink: JobEventSink;
  /** Event texts not read yet: the answer's, then the pushed ones. */
  private lines: string[] = [];
  /** No event comes after `lines`: the job ended, the session cannot be reached, or the reader was cancelled. */
  private ended = false;
  private cancelled = false;
  private wake: (() => void) | null = null;
  private lastEventAt = Date.now();
  private silent: Promise<JobEvent> | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    /** A job silent for this long ends with an `upstream_timeout` error event. */
    private readonly idleTimeoutMs = Infinity,
  ) {
    this.sink = (events, ended) => this.take(events, ended);
  }

  /**
   * The session answered startJob: its events come first (a push may have come before the
   * answer was read). The session validated each event against JobEvent before handing it over
   * (unknown fields may remain; nothing reads them), so the Worker does not validate it again.
   */
  begin(start: JobStart): void {
    this.lastEventAt = Date.now();
    this.lines = this.lines.length > 0 ? [...start.events, ...this.lines] : start.events;
    if (!start.more) this.ended = true;
  }

  /** The session's push (through the sink); refused once the reader was cancelled, so the session stops the job. */
  take(events: string[], ended: boolean): void {
    if (this.cancelled) throw new Error("The job's reader was cancelled.");
    if (this.ended) return;
    this.lastEventAt = Date.now();
    for (const e of events) this.lines.push(e);
    if (ended) this.ended = true;
    this.notify();
  }

  /** Whether the next event is already here (next() resolves without waiting for the session). */
  get buffered(): boolean {
    return this.lines.length > 0;
  }

  /** Whether every event of the job is already here (answered whole, or its last push came). */
  get complete(): boolean {
    return this.ended;
  }

  /** The next event, or null when the job ended (or the reader was cancelled) without one. */
  async next(): Promise<JobEvent | null> {
    for (;;) {
      const line = this.lines.shift();
      if (this.ended && this.lines.length === 0) this.stopTimer();
      if (line !== undefined) return JSON.parse(line) as JobEvent;
      if (this.ended) return null;
      const arrived = new Promise<null>((resolve) => (this.wake = () => resolve(null)));
      const silent = await (this.idleTimeoutMs === Infinity ? arrived : Promise.race([arrived, this.silence()]));
      if (silent) return silent;
    }
  }

  /** The session cannot be reached: nothing more comes (the relay ends the job as the miner's failure). */
  lost(): void {
    this.ended = true;
    this.notify();
  }

  /** Stop reading: a pending next() gives null, and later pushes are refused. */
  cancel(): Promise<void> {
    this.stopTimer();
    this.ended = true;
    this.cancelled = true;
    this.lines = [];
    this.notify();
    return Promise.resolve();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /**
   * Settles once the job has been silent for the idle timeout. One timer for the whole job,
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

  private stopTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
