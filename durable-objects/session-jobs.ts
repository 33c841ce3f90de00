import { silentFor, type JobEvent, type JobEventSink, type JobStart } from "./job-events.ts";

/**
 * The jobs a MinerSession multiplexes over its agent's socket, by id: each waits for its first
 * events to answer the Worker's startJob with, then pushes the rest to the job's sink until it ends.
 */

/** A job's sink as the session holds it: disposable when it is an RPC stub (the session's own copy). */
export type HeldSink = JobEventSink & Partial<Disposable>;

export interface StartJob {
  id: string;
  instanceId: string;
  /** The job frame for the agent, already JSON (protocol's `jobFrame`): sent as it is. */
  frame: string;
  /**
   * How long after the job's first event to keep collecting before answering (the job's end
   * answers at once). 0, for streams: answer with the first event. A non-streaming request waits
   * for the whole job anyway, and a short one is then answered without a stream.
   */
  holdMs?: number;
  /**
   * Epoch ms by which the job's first event must have come: else the job is cancelled on the
   * agent and startJob answers with an `upstream_timeout` error event.
   */
  deadline?: number;
  /**
   * Where the events after the answer go (the Worker's reader): given by streams. A job without
   * one keeps them until the Worker follows it (`follow`), which it does only when the answer
   * says more follow: a non-streaming job is answered whole unless it outlasts its hold.
   */
  sink?: JobEventSink;
}

interface LiveJob {
  sessionId: string;
  started: boolean;
  /** While no event has come: when startJob was called, and the deadline for the first one. */
  waiting: { since: number; deadline: number } | null;
  /** Until startJob has answered: the events held for the answer, the answer, and (once the first event came) when it is due. */
  held: { events: string[]; holdMs: number; answer: (start: JobStart) => void; firstAt?: number; until?: number } | null;
  /** Where the events after the answer go, and those of the agent's current message not pushed yet. */
  sink: HeldSink | null;
  outbox: string[];
}

export class SessionJobs {
  private readonly jobs = new Map<string, LiveJob>();
  /** Jobs to answer once the agent's message being read is done (their first event is in it). */
  private readonly answerDue = new Set<string>();
  /** Answered jobs with events of that message to push to their sinks once it is read. */
  private readonly pushDue = new Set<string>();
  /** Jobs that ended after an answer without a sink: their last events, until the Worker follows (or `until`). */
  private readonly unfollowed = new Map<string, { events: string[]; until: number }>();
  /**
   * The one timer of the session's jobs, and when it fires: never after the earliest deadline of
   * a job still waiting for its first event (the Worker waits on startJob without a timer of its
   * own), nor after the earliest end of a hold. It is left armed while the session has live jobs
   * (a later job's deadline or hold ends later: nothing to re-arm), so a busy session arms it
   * about once per hold or deadline length rather than once or twice per job (arming it was most
   * of startJob's own time in a profile of lone requests; bench:ab small, the deadline's alone:
   * requests/s +4.6% and +2.2%), and it is cleared with the last live job, so an idle session
   * can hibernate.
   */
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt = Infinity;

  /**
   * `stop` tells the agent of session `sessionId` to stop a job this table ended: the Worker
   * cancelled it (the client went away), its reader is gone (a push failed), or its first event is overdue.
   */
  constructor(private readonly stop: (id: string, sessionId: string) => void) {}

  /**
   * Take the job on for the agent's session `sessionId` and hand its frame to `send`; answers as
   * MinerSession.startJob says. The session owns `sink` from here on (disposed once the job ends).
   */
  start(job: Omit<StartJob, "sink">, sessionId: string, send: (frame: string) => void, sink?: HeldSink): Promise<JobStart> {
    if (this.jobs.has(job.id)) {
      sink?.[Symbol.dispose]?.();
      return Promise.resolve(failedStart("invalid_request", "Duplicate job id."));
    }
    const waiting = job.deadline === undefined ? null : { since: Date.now(), deadline: job.deadline };
    const answered = new Promise<JobStart>((answer) => {
      const held = { events: [] as string[], holdMs: job.holdMs ?? 0, answer };
      this.jobs.set(job.id, { sessionId, started: false, waiting, held, sink: sink ?? null, outbox: [] });
    });
    if (waiting) this.due(waiting.deadline);
    send(job.frame);
    return answered;
  }

  /** End a live job's events; the session it ran on, or null when it was not live. */
  end(id: string): string | null {
    const job = this.jobs.get(id);
    if (!job) return null;
    this.endJob(id, job);
    return job.sessionId;
  }

  /** End a live job's events and stop it on its agent (the client went away). Idempotent. */
  cancel(id: string): void {
    const sessionId = this.end(id);
    if (sessionId !== null) this.stop(id, sessionId);
  }

  /** An event from the agent of session `sessionId` (`raw`: the frame's text as it came). */
  deliver(sessionId: string, frame: JobEvent, raw: string | ArrayBuffer): void {
    const job = this.jobs.get(frame.id);
    if (!job || job.sessionId !== sessionId) return; // cancelled, or from an old session
    job.waiting = null; // its first event came: no deadline any more
    // The validated frame's own text is the event (no re-encoding), unless it spans lines.
    const line = typeof raw === "string" && !raw.includes("\n") ? raw : JSON.stringify(frame);
    if (frame.type !== "chunk") return this.endJob(frame.id, job, line);
    job.started = true;
    const held = job.held;
    if (!held) {
      job.outbox.push(line);
      if (job.sink) this.pushDue.add(frame.id);
      return;
    }
    held.events.push(line);
    if (held.events.length > 1) return;
    held.firstAt = Date.now();
    if (held.holdMs <= 0) return void this.answerDue.add(frame.id);
    held.until = held.firstAt + held.holdMs;
    this.due(held.until);
  }

  /**
   * The agent's message is read: answer the jobs whose first events came in it, with all of
   * them (a job that also ended in it was answered whole), and push the other jobs' events of
   * it to their sinks, one call per job.
   */
  messageRead(): void {
    for (const id of this.answerDue) {
      const job = this.jobs.get(id);
      if (job) this.answer(id, job);
    }
    this.answerDue.clear();
    for (const id of this.pushDue) {
      const job = this.jobs.get(id);
      if (job) this.push(id, job, false);
    }
    this.pushDue.clear();
  }

  /** Session `sessionId` is gone: fail its jobs (retryable elsewhere when nothing was sent). */
  failSession(sessionId: string): void {
    for (const [id, job] of this.jobs) {
      if (job.sessionId !== sessionId) continue;
      const lost: JobEvent = { type: "error", id, code: "miner_disconnected", message: "The miner disconnected during the request.", retryable: !job.started };
      this.endJob(id, job, JSON.stringify(lost));
    }
  }

  /** Something is due at `at`: the timer fires by then. */
  private due(at: number): void {
    if (at >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, at - Date.now()));
  }

  /**
   * End the jobs whose first event is overdue (cancelled on the agent) and answer the holds that
   * are over; re-arm for what is due next.
   */
  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const [id, job] of this.jobs) {
      const waiting = job.waiting;
      if (waiting && waiting.deadline <= now) {
        const late: JobEvent = { type: "error", id, code: "upstream_timeout", message: silentFor(waiting.deadline - waiting.since), retryable: false };
        this.endJob(id, job, JSON.stringify(late));
        this.stop(id, job.sessionId);
        continue;
      }
      const until = job.held?.until;
      if (until !== undefined && until <= now) this.answer(id, job);
      else if (until !== undefined) next = Math.min(next, until);
      if (waiting) next = Math.min(next, waiting.deadline);
    }
    for (const [id, over] of this.unfollowed) {
      if (over.until <= now) this.unfollowed.delete(id);
      else next = Math.min(next, over.until);
    }
    if (next !== Infinity) this.due(next);
  }

  /** Answer startJob with the events held so far; the rest go to the job's sink. */
  private answer(id: string, job: LiveJob): void {
    const held = job.held;
    if (!held) return;
    job.held = null;
    held.answer({ events: held.events, more: true, heldMs: heldFor(held) });
  }

  /**
   * Push the job's waiting events to its sink (with `ended`, its last ones: then the sink is let
   * go). A push that fails means the Worker's reader is gone: the job is stopped.
   */
  private push(id: string, job: LiveJob, ended: boolean): void {
    const sink = job.sink;
    if (!sink || (job.outbox.length === 0 && !ended)) return;
    const events = job.outbox;
    job.outbox = [];
    if (ended) job.sink = null;
    pushTo(sink, events, ended, () => this.cancel(id));
    if (ended) sink[Symbol.dispose]?.();
  }

  /**
   * The Worker reads the rest of a job answered without a sink (a non-streaming job that outlasted
   * its hold): what came since the answer goes to `sink` at once, the rest as it comes. A job that
   * ended meanwhile gives its last events, and a job no longer known (cancelled, or its end was
   * not followed in time) none, with `ended`.
   */
  follow(id: string, sink: HeldSink): void {
    const job = this.jobs.get(id);
    if (job && !job.held && !job.sink) {
      job.sink = sink;
      return this.push(id, job, false);
    }
    const over = this.unfollowed.get(id);
    this.unfollowed.delete(id);
    pushTo(sink, over?.events ?? [], true, () => undefined);
    sink[Symbol.dispose]?.();
    this.clearTimerWhenIdle();
  }

  /**
   * The job is over (ended with `last`, cancelled, or its agent gone): answer startJob, or push
   * its last events to its sink, and forget the job. A cancelled job's reader was cancelled by
   * the Worker (its only way to cancel): nothing more is pushed to it.
   */
  private endJob(id: string, job: LiveJob, last?: string): void {
    this.jobs.delete(id);
    this.pushDue.delete(id);
    const held = job.held;
    if (held) {
      job.held = null;
      held.answer({ events: last === undefined ? held.events : [...held.events, last], more: false, heldMs: heldFor(held) });
    } else if (last !== undefined && job.sink) {
      job.outbox.push(last);
      this.push(id, job, true);
    } else if (last !== undefined) {
      // Answered, and the Worker's follow is on its way: the job's end waits for it a while.
      const until = Date.now() + FOLLOW_WAIT_MS;
      this.unfollowed.set(id, { events: [...job.outbox, last], until });
      this.due(until);
    }
    job.sink?.[Symbol.dispose]?.();
    job.sink = null;
    this.clearTimerWhenIdle();
  }

  /** No live job and no end waiting for its follow: no timer, so the session can hibernate. */
  private clearTimerWhenIdle(): void {
    if (this.jobs.size > 0 || this.unfollowed.size > 0) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }
}

/** Push to a sink; `failed` when the push is refused (the reader is gone). */
function pushTo(sink: HeldSink, events: string[], ended: boolean, failed: () => void): void {
  try {
    void Promise.resolve(sink(events, ended)).catch(failed);
  } catch {
    failed();
  }
}

/** How long a job's end waits for the Worker to follow it (it follows as soon as it has the answer). */
const FOLLOW_WAIT_MS = 30_000;

/** A job refused before it reached the agent (another instance may take it). */
export function failedStart(code: "miner_disconnected" | "invalid_request", message: string): JobStart {
  const event: JobEvent = { type: "error", id: "", code, message, retryable: true };
  return { events: [JSON.stringify(event)], more: false, heldMs: 0 };
}

/** How long a job's first event has waited for the answer (0 when the last event is the first). */
function heldFor(held: { firstAt?: number }): number {
  return held.firstAt === undefined ? 0 : Date.now() - held.firstAt;
}
