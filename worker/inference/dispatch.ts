import { choiceCount, jobFrame, type JobEvent } from "../../protocol/index.ts";
import type { AcquireRequest, AcquireResult, ChuteRouter, LeaseReport } from "../../durable-objects/chute-router.ts";
import type { MinerSession } from "../../durable-objects/miner-session.ts";
import { silentFor, type JobStart } from "../../durable-objects/job-events.ts";
import { JobEventReader } from "./job-event-reader.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { stubByName } from "../runtime/object-ids.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import type { NormalizedRequest } from "./normalize.ts";
import { prefixHashes } from "./prefix.ts";
import { DEFAULT_RELEASE_DELAY_MS, queueRelease, takeOver, takeReleases, type HeldLease } from "./releases.ts";

/** At most this many instances are tried for one request before the first token. */
export const MAX_ATTEMPTS = 3;

export interface DispatchOptions {
  env: Env;
  chute: ChuteRecord;
  request: NormalizedRequest;
  jobId: string;
  traceId: string;
  queueWaitMs: number;
  /** Epoch ms by which the first token must have arrived (across retries). */
  deadline: number;
  /** After the first token, a job silent for this long is ended with an error. */
  idleTimeoutMs: number;
}

/** A job that has produced its first event on some instance; the rest is read from `events`. */
export interface Dispatched {
  first: Extract<JobEvent, { type: "chunk" | "done" }>;
  /** When the first event reached the gateway (the session may have held it a while with the ones after it). */
  firstAt: number;
  events: JobEventReader;
  instanceId: string;
  minerId: string;
  attempts: number;
  /** Give the router slot back with how the request went; safe to call more than once. */
  release(report?: LeaseReport): Promise<void>;
  /** Ask the agent to stop generating. */
  cancel(): Promise<void>;
}

/** The first lease, asked for while the ledger admits the request (one round trip saved). */
export interface FirstLease {
  router: DurableObjectStub<ChuteRouter>;
  prefixes: string[];
  lease: Promise<AcquireResult>;
  /** Give the lease back unused (the request was refused); safe to call more than once. */
  abandon(): Promise<void>;
}

export function acquireFirst(env: Env, chute: ChuteRecord, request: NormalizedRequest, queueWaitMs: number): FirstLease {
  const router = stubByName(env.CHUTE_ROUTER, chute.id);
  const prefixes = prefixHashes(request.spec);
  const weight = choiceCount(request.spec);
  // A slot this isolate's last request for the chute just gave back, when the router allows.
  const handed = takeOver(chute.id, weight, prefixes);
  const lease = handed ? Promise.resolve(handed) : acquire(router, { chute: chute.id, avoid: [], waitMs: queueWaitMs, prefixes, weight });
  let abandoned: Promise<void> | null = null;
  const abandon = () =>
    (abandoned ??= lease.then((l) => (l.ok ? releaseLater(env, chute.id, heldLease(l, weight, prefixes)) : undefined)).catch(() => undefined));
  return { router, prefixes, lease, abandon };
}

/** An acquire that carries this isolate's pending releases for the chute. */
async function acquire(router: DurableObjectStub<ChuteRouter>, req: AcquireRequest): Promise<AcquireResult> {
  const { released, sent } = takeReleases(req.chute!);
  try {
    const result = await router.acquire(released.length > 0 ? { ...req, released } : req);
    sent(result.ok ? result : {});
    return result;
  } catch (err) {
    sent(null, err);
    throw err;
  }
}

function heldLease(l: Extract<AcquireResult, { ok: true }>, weight: number, prefixes: string[]): HeldLease {
  return { leaseId: l.leaseId, instanceId: l.instanceId, minerId: l.minerId, weight, prefixes };
}

function releaseLater(env: Env, chuteId: string, lease: HeldLease, report?: LeaseReport): Promise<void> {
  const delayMs = numberVar(env.SLOT_RELEASE_DELAY_MS, DEFAULT_RELEASE_DELAY_MS);
  return queueRelease(() => stubByName(env.CHUTE_ROUTER, chuteId), chuteId, lease, report, delayMs);
}

/**
 * Send the job on the first lease's instance and wait for its first event. A failure before the
 * first token is retried on another instance, invisibly to the client (the response has not
 * started).
 */
export async function dispatch(opts: DispatchOptions & { first: FirstLease }): Promise<Dispatched> {
  const { env, chute } = opts;
  const { router, prefixes } = opts.first;
  const avoid: string[] = [];
  let lastFailure: ApiError | null = null;
  for (let attempt = 1; ; attempt++) {
    const lease = attempt === 1 ? await opts.first.lease : await acquire(router, { chute: chute.id, avoid, waitMs: opts.queueWaitMs, prefixes, weight: choiceCount(opts.request.spec) });
    // No other instance to try after a failure: the client gets that failure (a 502 for a
    // broken miner), not "no capacity", which would hide what went wrong.
    if (!lease.ok && lease.code === "no_capacity" && lastFailure) throw lastFailure;
    if (!lease.ok) throw leaseError(lease.code, chute.name, attempt > 1);
    let released = false;
    const held = heldLease(lease, choiceCount(opts.request.spec), prefixes);
    const release = async (report?: LeaseReport) => {
      if (released) return;
      released = true;
      await releaseLater(env, chute.id, held, report);
    };
    const session = stubByName(env.MINER_SESSION, lease.minerId);
    const cancel = async () => {
      await session.cancelJob(opts.jobId);
    };
    const first = await firstEvent(opts, session, lease.instanceId, cancel);
    if (first.type === "chunk" || first.type === "done") {
      return {
        first,
        firstAt: first.at,
        events: first.reader,
        instanceId: lease.instanceId,
        minerId: lease.minerId,
        attempts: attempt,
        release,
        cancel,
      };
    }
    await release({ result: isInstanceFailure(first.error.code) ? "failed" : "neutral" });
    if (first.error.code === "miner_disconnected") {
      await router.unregisterInstance(lease.instanceId, lease.minerId);
    }
    if (!first.retryable || attempt >= MAX_ATTEMPTS) throw first.error;
    lastFailure = first.error;
    avoid.push(lease.instanceId);
  }
}

type First =
  | (Extract<JobEvent, { type: "chunk" | "done" }> & { reader: JobEventReader; at: number })
  | { type: "failed"; error: ApiError; retryable: boolean };

async function firstEvent(
  opts: DispatchOptions,
  session: DurableObjectStub<MinerSession>,
  instanceId: string,
  cancel: () => Promise<void>,
): Promise<First> {
  // The session answers at the job's first event: a non-streaming request lets it collect a
  // while longer, so a short job comes back whole in the answer (nothing follows it).
  const holdMs = opts.request.stream ? 0 : NON_STREAM_HOLD_MS;
  const waitMs = opts.deadline - Date.now();
  const reader = new JobEventReader(opts.idleTimeoutMs);
  let start: JobStart;
  try {
    // The session answers by the deadline: with the first event (held a while), or, when none
    // came, with an upstream_timeout error event, having stopped the job on the agent. (One
    // timer in the session for all its jobs rather than one per request here: bench:ab small,
    // -1.4% workerd CPU per request.)
    const frame = jobFrame(opts.jobId, instanceId, opts.request.spec, opts.traceId);
    // A stream's later events are pushed to its reader: the sink goes with the job. A non-streaming
    // job is answered whole unless it outlasts its hold; only then is its sink sent (followJob),
    // which a short job does not pay for.
    const sink = opts.request.stream ? { sink: reader.sink } : {};
    start = await session.startJob({ id: opts.jobId, instanceId, frame, holdMs, deadline: opts.deadline, ...sink });
  } catch {
    // Should a stream's job have started anyway, its first push is refused and the session stops it.
    void reader.cancel();
    return failed("miner_disconnected", "The miner could not be reached.", true);
  }
  // When the first event reached the session (a held answer is that much later).
  const firstAt = Date.now() - start.heldMs;
  // A held answer can come up to the hold after the deadline: its first event must not have.
  if (start.heldMs > 0 && firstAt > opts.deadline) {
    await cancel().catch(() => undefined);
    void reader.cancel();
    return failed("upstream_timeout", silentFor(waitMs), false);
  }
  try {
    reader.begin(start);
    if (start.more && !opts.request.stream) {
      void session.followJob(opts.jobId, reader.sink).catch(() => reader.lost());
    }
    const ev = await reader.next();
    if (ev === null) return failed("miner_disconnected", "The miner closed the job without an answer.", true);
    if (ev.type === "error") return failed(ev.code, ev.message, ev.retryable);
    return { ...ev, reader, at: firstAt };
  } catch {
    return failed("bad_upstream_response", "The miner sent an invalid response.", true);
  }
}

/** A non-streaming job's events for this long after its first are collected into the session's answer. */
const NON_STREAM_HOLD_MS = 1000;

/** Errors that count against the instance's health (not the client's or the platform's doing). */
export function isInstanceFailure(code: string | null): boolean {
  return code === "engine_error" || code === "miner_disconnected" || code === "bad_upstream_response" || code === "upstream_timeout";
}

function failed(code: ApiError["code"], message: string, retryable: boolean): First {
  return { type: "failed", error: new ApiError(code, message), retryable };
}

function leaseError(code: "no_capacity" | "capacity_exceeded", model: string, retried: boolean): ApiError {
  if (code === "no_capacity") {
    const why = retried ? "No other miner could take over the request" : "No miner is serving";
    return new ApiError("no_capacity", `${why} for model '${model}'. Try again shortly.`, null, { "retry-after": "5" });
  }
  return new ApiError("capacity_exceeded", `Model '${model}' is at capacity. Try again shortly.`, null, {
    "retry-after": "1",
  });
}
