import type { JobEvent } from "../../protocol/index.ts";
import { ERROR_CODES } from "../../protocol/index.ts";
import { ApiError } from "../errors.ts";
import {
  SSE_DONE,
  completeBody,
  errorChunk,
  sseEvent,
  streamChunk,
  usageBody,
  usageChunk,
  type ResponseMeta,
} from "../openai/format.ts";
import type { Dispatched } from "./dispatch.ts";
import type { InvocationRecord } from "./record.ts";

/** What the relay learned about the job, for billing and the invocation record. */
export type JobOutcome = Pick<
  InvocationRecord,
  "outcome" | "errorCode" | "finishReason" | "promptTokens" | "completionTokens" | "ttftMs"
>;

export interface RelayOptions {
  meta: ResponseMeta;
  job: Dispatched;
  startedAt: number;
  headers: Record<string, string>;
  /** Aborts when the client disconnects. */
  clientGone: AbortSignal;
  /** Called exactly once when the job is over, however it ended. */
  onEnd: (outcome: JobOutcome) => void;
}

/**
 * Tracks delivered tokens: completion tokens are counted from what was relayed, not taken from
 * the miner's claim, so the client is billed only for what it received.
 */
class Tally {
  text = "";
  delivered = 0;
  ttftMs: number | null = null;
  ended = false;

  constructor(
    private readonly startedAt: number,
    private readonly onEnd: (o: JobOutcome) => void,
  ) {}

  chunk(ev: Extract<JobEvent, { type: "chunk" }>, keepText: boolean): void {
    if (this.ttftMs === null) this.ttftMs = Date.now() - this.startedAt;
    this.delivered += ev.tokens;
    if (keepText) this.text += ev.text;
  }

  end(o: Omit<JobOutcome, "ttftMs" | "completionTokens">): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd({ ...o, completionTokens: this.delivered, ttftMs: this.ttftMs });
  }
}

function failure(ev: Extract<JobEvent, { type: "error" }> | null): { code: keyof typeof ERROR_CODES; message: string } {
  return ev ?? { code: "miner_disconnected", message: "The miner stopped answering during the request." };
}

/** When the client goes away: stop the engine and end the job as cancelled. */
function onClientGone(opts: RelayOptions, tally: Tally, promptTokens: () => number): void {
  const cancel = () => {
    if (tally.ended) return;
    tally.end({ outcome: "cancelled", errorCode: null, finishReason: null, promptTokens: promptTokens() });
    void opts.job.cancel().catch(() => undefined);
    void opts.job.events.cancel();
  };
  if (opts.clientGone.aborted) cancel();
  else opts.clientGone.addEventListener("abort", cancel, { once: true });
}

/** Stream the job as OpenAI server-sent events. */
export function relayStream(opts: RelayOptions): Response {
  const { meta, job } = opts;
  const tally = new Tally(opts.startedAt, opts.onEnd);
  let promptTokens = 0;
  let pending: JobEvent | null = opts.job.first;
  onClientGone(opts, tally, () => promptTokens);

  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(sseEvent(streamChunk(meta, meta.endpoint === "chat" ? "" : null, null, true)));
    },
    async pull(controller) {
      const ev = pending ?? (await job.events.next().catch(() => null));
      pending = null;
      if (tally.ended) return controller.close(); // the client went away meanwhile
      if (ev?.type === "chunk") {
        tally.chunk(ev, false);
        controller.enqueue(sseEvent(streamChunk(meta, ev.text, null)));
        return;
      }
      if (ev?.type === "done") {
        promptTokens = ev.usage.promptTokens;
        controller.enqueue(sseEvent(streamChunk(meta, null, ev.finishReason)));
        if (meta.includeUsage) controller.enqueue(sseEvent(usageChunk(meta, usageBody(promptTokens, tally.delivered))));
        tally.end({ outcome: "ok", errorCode: null, finishReason: ev.finishReason, promptTokens });
      } else {
        const err = failure(ev);
        controller.enqueue(
          sseEvent(errorChunk(meta, { message: err.message, type: ERROR_CODES[err.code].type, code: err.code })),
        );
        tally.end({ outcome: "error", errorCode: err.code, finishReason: "error", promptTokens });
        void job.cancel().catch(() => undefined); // a silent job still holds the engine
      }
      controller.enqueue(SSE_DONE);
      controller.close();
    },
    async cancel() {
      if (tally.ended) return;
      tally.end({ outcome: "cancelled", errorCode: null, finishReason: null, promptTokens });
      await job.cancel().catch(() => undefined);
      await job.events.cancel();
    },
  });
  return new Response(body, {
    headers: {
      ...opts.headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
    },
  });
}

/** Collect the whole job and answer with one JSON body. */
export async function relayComplete(opts: RelayOptions): Promise<Response> {
  const { meta, job } = opts;
  const tally = new Tally(opts.startedAt, opts.onEnd);
  onClientGone(opts, tally, () => 0);
  let ev: JobEvent | null = job.first;
  while (ev?.type === "chunk") {
    tally.chunk(ev, true);
    ev = await job.events.next().catch(() => null);
  }
  if (tally.ended) throw new ApiError("request_timeout", "The client closed the request.");
  if (ev?.type !== "done") {
    const err = failure(ev);
    tally.delivered = 0; // the client receives none of it, so none of it is billed
    tally.end({ outcome: "error", errorCode: err.code, finishReason: "error", promptTokens: 0 });
    void job.cancel().catch(() => undefined);
    throw new ApiError(err.code, err.message);
  }
  const { promptTokens } = ev.usage;
  tally.end({ outcome: "ok", errorCode: null, finishReason: ev.finishReason, promptTokens });
  const body = completeBody(meta, tally.text, ev.finishReason, usageBody(promptTokens, tally.delivered));
  return new Response(JSON.stringify(body), { headers: { ...opts.headers, "content-type": "application/json" } });
}
