import type { FinishReason, JobEvent } from "../../protocol/index.ts";
import { ERROR_CODES } from "../../protocol/index.ts";
import { ApiError } from "../errors.ts";
import {
  SSE_DONE,
  ToolCallCollector,
  completeBody,
  errorChunk,
  sseEvent,
  streamChunk,
  textEventEncoder,
  usageBody,
  usageChunk,
  type ResponseMeta,
} from "../openai/format.ts";
import { plausibleTokens } from "../billing/pricing.ts";
import type { Dispatched } from "./dispatch.ts";
import { KEEPALIVE } from "./keepalive.ts";
import type { InvocationRecord } from "./record.ts";

/**
 * What the relay learned about the job, for billing and the invocation record. Completion
 * tokens are the gateway's own count of what reached the client; the `claimed` counts are the
 * miner's. `promptTokens` is the miner's count (the gateway has no tokenizer); the caller clamps it.
 */
export type JobOutcome = Pick<
  InvocationRecord,
  | "outcome"
  | "errorCode"
  | "finishReason"
  | "promptTokens"
  | "completionTokens"
  | "claimedPromptTokens"
  | "claimedCompletionTokens"
  | "ttftMs"
> & { cachedPromptTokens?: number };

export interface RelayOptions {
  meta: ResponseMeta;
  job: Dispatched;
  startedAt: number;
  headers: Record<string, string>;
  /** Aborts when the client disconnects. */
  clientGone: AbortSignal;
  /** Called exactly once when the job is over, however it ended. */
  onEnd: (outcome: JobOutcome) => void;
  /** The prompt tokens billed for a miner's prompt count (clamped to the gateway's bound). */
  billedPrompt: (claimed: number) => number;
  /** The job's choices (index, and which prompt each answers); one for most requests. */
  choices: readonly { index: number; prompt: number }[];
  /** Legacy completions with `echo`: each prompt, sent before the text of the choices that answer it. */
  echo?: readonly string[];
  /**
   * Streams: while the job is silent mid-stream, an SSE comment this often, so proxies keep the
   * stream and a client that left is noticed (the write fails) and its job cancelled.
   */
  keepAliveMs?: number;
}

type ChunkEvent = Extract<JobEvent, { type: "chunk" }>;


/**
 * Tracks delivered tokens: completion tokens are counted from what was relayed, each chunk's
 * claim clamped to what its text can hold, so the client is billed only for what it received and
 * a miner cannot inflate the count.
 */
class Tally {
  delivered = 0;
  claimed = 0;
  /** The miner's prompt count: from the first chunk, or from the final usage. */
  promptTokens: number | null = null;
  /** Prompt tokens the engine served from its prefix cache (charged at the cached price). */
  cachedPromptTokens = 0;
  ttftMs: number | null = null;
  ended = false;

  constructor(
    private readonly startedAt: number,
    /** When the job's first event reached the gateway. */
    private readonly firstAt: number,
    private readonly onEnd: (o: JobOutcome) => void,
  ) {}

  chunk(ev: Extract<JobEvent, { type: "chunk" }>): void {
    if (this.ttftMs === null) this.ttftMs = this.firstAt - this.startedAt;
    if (ev.promptTokens !== undefined && this.promptTokens === null) this.promptTokens = ev.promptTokens;
    this.claimed += ev.tokens;
    // Tool-call pieces are generated tokens too: they count toward what the chunk can hold.
    let toolText = "";
    for (const t of ev.toolCalls ?? []) toolText += (t.name ?? "") + t.arguments;
    this.delivered += plausibleTokens(toolText ? ev.text + toolText : ev.text, ev.tokens);
  }

  done(ev: Extract<JobEvent, { type: "done" }>): void {
    this.promptTokens = ev.usage.promptTokens;
    this.claimed = ev.usage.completionTokens;
    this.cachedPromptTokens = ev.usage.cachedPromptTokens ?? 0;
  }

  end(o: Pick<JobOutcome, "outcome" | "errorCode" | "finishReason">, billed = true): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd({
      ...o,
      promptTokens: billed ? (this.promptTokens ?? 0) : 0,
      completionTokens: billed ? this.delivered : 0,
      claimedPromptTokens: this.promptTokens,
      claimedCompletionTokens: this.claimed,
      cachedPromptTokens: billed ? this.cachedPromptTokens : 0,
      ttftMs: this.ttftMs,
    });
  }
}

/**
 * Never trust a frame: a call's first piece must carry its id and name (once), calls must come
 * in index order, and no piece may belong to a call that has not started. Anything else is an
 * invalid miner response (the official clients' stream helpers would fail on it).
 */
class ToolCallOrder {
  private started = 0;

  accepts(ev: ChunkEvent): boolean {
    for (const d of ev.toolCalls ?? []) {
      const header = d.id !== undefined || d.name !== undefined;
      if (header ? d.id === undefined || d.name === undefined || d.index !== this.started : d.index >= this.started) return false;
      if (header) this.started++;
    }
    return true;
  }

  invalid(ev: ChunkEvent): Extract<JobEvent, { type: "error" }> {
    return { type: "error", id: ev.id, code: "bad_upstream_response", message: "The miner sent an invalid response (tool call pieces out of order).", retryable: false };
  }
}

/** What the relay keeps per choice: tool-call order, where its text is, whether it has started. */
class ChoiceState {
  readonly calls = new ToolCallOrder();
  opened = false;
  textOffset: number;
  text: string;
  readonly toolCalls = new ToolCallCollector();
  logprobs: NonNullable<ChunkEvent["logprobs"]> | null = null;

  constructor(
    readonly index: number,
    readonly echo: string,
  ) {
    this.textOffset = echo.length;
    this.text = echo;
  }
}

function choiceStates(opts: RelayOptions): ChoiceState[] {
  return opts.choices.map((c) => new ChoiceState(c.index, opts.echo?.[c.prompt] ?? ""));
}

/**
 * The choice a chunk continues; or, when the miner named a choice the job does not have or sent
 * tool-call pieces out of order, the error the job ends with.
 */
function acceptChunk(states: readonly ChoiceState[], ev: ChunkEvent): ChoiceState | Extract<JobEvent, { type: "error" }> {
  const c = states[ev.choice ?? 0];
  if (!c) return invalidChoice(ev);
  return c.calls.accepts(ev) ? c : c.calls.invalid(ev);
}

/** Each choice's finish reason (`finishReason` is choice 0's; jobs with several choices list them). */
function finishOf(ev: Extract<JobEvent, { type: "done" }>, index: number): FinishReason {
  return ev.choices?.find((c) => c.index === index)?.finishReason ?? ev.finishReason;
}

function invalidChoice(ev: ChunkEvent): Extract<JobEvent, { type: "error" }> {
  return { type: "error", id: ev.id, code: "bad_upstream_response", message: "The miner sent an invalid response (a choice the request did not ask for).", retryable: false };
}

function failure(ev: Extract<JobEvent, { type: "error" }> | null): { code: keyof typeof ERROR_CODES; message: string } {
  return ev ?? { code: "miner_disconnected", message: "The miner stopped answering during the request." };
}

/**
 * When the client goes away: stop the engine and end the job as cancelled, billed for what was
 * delivered (streams) or for nothing (a complete body that was never sent). Returns the trigger,
 * and `detach` for when the job is over: a listener left on the request's signal cost workerd
 * about 13% of its CPU per small request (`npm run bench:ab`, twice).
 */
function onClientGone(opts: RelayOptions, tally: Tally, billed: boolean): { cancel: () => void; detach: () => void } {
  const cancel = () => {
    if (tally.ended) return;
    tally.end({ outcome: "cancelled", errorCode: null, finishReason: null }, billed);
    void opts.job.cancel().catch(() => undefined);
    void opts.job.events.cancel();
  };
  const detach = () => opts.clientGone.removeEventListener("abort", cancel);
  if (opts.clientGone.aborted) cancel();
  else opts.clientGone.addEventListener("abort", cancel, { once: true });
  return { cancel, detach };
}

/**
 * Stream the job as OpenAI server-sent events. The job is pumped to its end independently of
 * how fast the client reads: a client that stalls without closing cannot hold the instance's
 * slot or leave the job unaccounted. `done` settles when the job is over; keep the Worker alive
 * until then (waitUntil).
 */
export function relayStream(opts: RelayOptions): { response: Response; done: Promise<void> } {
  const { meta, job } = opts;
  const tally = new Tally(opts.startedAt, opts.job.firstAt, opts.onEnd);
  const { cancel, detach } = onClientGone(opts, tally, true);
  // An IdentityTransformStream, not a TransformStream: its readable side is native to workerd, so
  // when writing the body to the client fails (the client left: EPIPE/ECONNRESET) the pending and
  // later writes below reject. With a JS TransformStream that failure is lost: workerd drops the
  // readable without cancelling it, and does not abort request.signal either (it only does that
  // when the request is cancelled, not when it fails), so the job would run to its end.
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  // Writes are not awaited: output is bounded by max_tokens; a failed write means the client left.
  // The events made from what the session handed over together go out as one write (one chunk
  // on the wire): `send` queues, `flush` writes, before the relay waits for the next event.
  let wroteAt = Date.now();
  let queued: Uint8Array[] = [];
  const send = (bytes: Uint8Array) => {
    queued.push(bytes);
  };
  const flush = () => {
    if (queued.length === 0) return;
    const bytes = queued.length === 1 ? queued[0]! : concatBytes(queued);
    queued = [];
    wroteAt = Date.now();
    void writer.write(bytes).catch(cancel);
  };
  // One timer for the whole stream (not one per event): a comment whenever it was silent that long.
  // (A job that came back whole cannot go silent: no timer for it.)
  const every = job.events.complete ? 0 : (opts.keepAliveMs ?? 0);
  const keepAlive = every > 0
    ? setInterval(() => {
        if (Date.now() - wroteAt >= every - 10) {
          send(KEEPALIVE);
          flush();
        }
      }, every)
    : null;
  const nextEvent = (): Promise<JobEvent | null> => {
    if (!job.events.buffered) flush();
    return job.events.next().catch(() => null);
  };

  const pump = async () => {
    const chat = meta.endpoint === "chat";
    const states = choiceStates(opts);
    const textEvent = textEventEncoder(meta);
    // A choice's first chunk names the role (chat), or carries its echoed prompt (completions).
    const open = (c: ChoiceState, promptLogprobs?: ChunkEvent["promptLogprobs"]) => {
      if (c.opened) return;
      c.opened = true;
      send(sseEvent(streamChunk(meta, chat ? { index: c.index, role: true, text: "" } : { index: c.index, text: c.echo, logprobs: promptLogprobs, textOffset: 0 }, null)));
    };
    let ev: JobEvent | null = job.first;
    while (ev?.type === "chunk") {
      const c = acceptChunk(states, ev);
      if (!(c instanceof ChoiceState)) {
        ev = c;
        break;
      }
      open(c, ev.promptLogprobs);
      tally.chunk(ev);
      send(ev.toolCalls?.length || ev.logprobs?.length
        ? sseEvent(streamChunk(meta, { index: c.index, text: ev.text || (ev.toolCalls?.length ? null : ""), toolCalls: ev.toolCalls, logprobs: ev.logprobs, textOffset: c.textOffset }, null))
        : textEvent(c.index, ev.text));
      c.textOffset += ev.text.length;
      ev = await nextEvent();
      if (tally.ended) return; // the client went away meanwhile
    }
    if (ev?.type === "done") {
      tally.done(ev);
      for (const c of states) {
        open(c);
        send(sseEvent(streamChunk(meta, { index: c.index }, finishOf(ev, c.index))));
      }
      if (meta.includeUsage) {
        send(sseEvent(usageChunk(meta, usageBody(opts.billedPrompt(tally.promptTokens ?? 0), tally.delivered, ev.usage.cachedPromptTokens))));
      }
      tally.end({ outcome: "ok", errorCode: null, finishReason: ev.finishReason });
    } else {
      const err = failure(ev);
      send(sseEvent(errorChunk(meta, { message: err.message, type: ERROR_CODES[err.code].type, code: err.code })));
      tally.end({ outcome: "error", errorCode: err.code, finishReason: "error" });
      void job.cancel().catch(() => undefined); // a silent job still holds the engine
    }
    send(SSE_DONE);
    flush();
  };
  const done = pump().finally(() => {
    detach();
    if (keepAlive) clearInterval(keepAlive);
    return writer.close().catch(() => undefined);
  });
  const response = new Response(readable, {
    headers: {
      ...opts.headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
    },
  });
  return { response, done };
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Collect the whole job and answer with one JSON body. */
export async function relayComplete(opts: RelayOptions): Promise<Response> {
  const { meta, job } = opts;
  const tally = new Tally(opts.startedAt, opts.job.firstAt, opts.onEnd);
  const { detach } = onClientGone(opts, tally, false);
  let ev: JobEvent | null = job.first;
  const states = choiceStates(opts);
  while (ev?.type === "chunk") {
    const c = acceptChunk(states, ev);
    if (!(c instanceof ChoiceState)) {
      ev = c;
      break;
    }
    if (!c.opened && ev.promptLogprobs) c.logprobs = [...ev.promptLogprobs];
    c.opened = true;
    tally.chunk(ev);
    c.text += ev.text;
    if (ev.toolCalls) c.toolCalls.add(ev.toolCalls);
    if (ev.logprobs) (c.logprobs ??= []).push(...ev.logprobs);
    ev = await job.events.next().catch(() => null);
  }
  detach();
  if (tally.ended) throw new ApiError("request_timeout", "The client closed the request.");
  if (ev?.type !== "done") {
    const err = failure(ev);
    // The client receives none of it, so none of it is billed.
    tally.end({ outcome: "error", errorCode: err.code, finishReason: "error" }, false);
    void job.cancel().catch(() => undefined);
    throw new ApiError(err.code, err.message);
  }
  tally.done(ev);
  tally.end({ outcome: "ok", errorCode: null, finishReason: ev.finishReason });
  const usage = usageBody(opts.billedPrompt(tally.promptTokens ?? 0), tally.delivered, ev.usage.cachedPromptTokens);
  const done = ev;
  const choices = states.map((c) => ({ index: c.index, text: c.text, finish: finishOf(done, c.index), toolCalls: c.toolCalls.all, logprobs: c.logprobs }));
  const body = completeBody(meta, { usage, choices });
  return new Response(JSON.stringify(body), { headers: { ...opts.headers, "content-type": "application/json" } });
}
