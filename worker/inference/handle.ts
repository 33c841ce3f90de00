import type { Context } from "hono";
import { choicesOf } from "../../protocol/index.ts";
import { findChute } from "../catalog/index.ts";
import type { AppEnv } from "../env.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { CORS_HEADERS } from "../middleware/response-headers/index.ts";
import { within } from "../runtime/within.ts";
import { readJson } from "../http/json.ts";
import { newResponseId, type Endpoint, type ResponseMeta } from "../openai/format.ts";
import { openMeter } from "../billing/ledger.ts";
import { costNano, minerShareNano, promptTokenBound } from "../billing/pricing.ts";
import type { LeaseReport } from "../../durable-objects/chute-router.ts";
import { acquireFirst, dispatch, isInstanceFailure, type Dispatched } from "./dispatch.ts";
import { keepAliveStream } from "./keepalive.ts";
import { modelOf, normalize } from "./normalize.ts";
import { recordInvocation, type InvocationRecord } from "./record.ts";
import { relayComplete, relayStream, type JobOutcome } from "./relay.ts";
import { relayEmbeddings } from "./relay-embeddings.ts";

/** The serving miner's share of each charge when MINER_SHARE_BPS is unset. */
const DEFAULT_MINER_SHARE_BPS = 8000;
/** A stream silent this long (before its first token, or mid-stream) gets SSE keep-alive comments, this often. */
const DEFAULT_SSE_KEEPALIVE_MS = 5000;

/** POST /v1/chat/completions, /v1/completions and /v1/embeddings. */
export async function handleInference(c: Context<AppEnv>, endpoint: Endpoint): Promise<Response> {
  const startedAt = Date.now();
  const body = await readJson(c);
  const key = c.get("apiKey");
  const modelName = modelOf(body);
  const chute = await findChute(c.env.DB, modelName, key.accountId);
  if (!chute) {
    throw new ApiError("model_not_found", `The model '${modelName}' does not exist or you do not have access to it.`, "model");
  }
  const request = normalize(endpoint, body, chute);
  const meta: ResponseMeta = {
    id: newResponseId(endpoint),
    created: Math.floor(startedAt / 1000),
    model: chute.name,
    endpoint,
    includeUsage: request.stream && request.includeUsage,
  };
  // The invocation record: what every outcome shares, plus what the outcome knows.
  type Outcome = Omit<InvocationRecord, "id" | "key" | "chute" | "endpoint" | "stream" | "durationMs">;
  const record = (o: Outcome) =>
    recordInvocation(c.env.DB, {
      id: meta.id,
      key,
      chute,
      endpoint,
      stream: request.stream,
      durationMs: Date.now() - startedAt,
      ...o,
    });

  // Ask the router for an instance and the ledger to admit the request at the same time: the
  // ledger reserves the worst case (402 when the balance cannot cover it) and counts the key's
  // rate limits; a refused request gives its lease back.
  const queueWaitMs = numberVar(c.env.QUEUE_WAIT_MS, 2000);
  const first = acquireFirst(c.env, chute, request, queueWaitMs);
  const meter = await openMeter(c.env, key, chute, request.spec, meta.id, (p) => c.executionCtx.waitUntil(p)).catch((err: unknown) => {
    c.executionCtx.waitUntil(first.abandon());
    throw err;
  });
  const promptBound = promptTokenBound(request.spec);
  const choices = choicesOf(request.spec).map(({ index, prompt }) => ({ index, prompt }));
  const billedPrompt = (claimed: number) => Math.min(claimed, promptBound);

  const dispatching = dispatch({
    env: c.env,
    chute,
    request,
    first,
    jobId: meta.id,
    traceId: c.get("requestId"),
    queueWaitMs,
    deadline: startedAt + numberVar(c.env.FIRST_TOKEN_TIMEOUT_MS, 120_000),
    idleTimeoutMs: numberVar(c.env.STREAM_IDLE_TIMEOUT_MS, 120_000),
  }).catch((err: unknown) => {
    // Nothing was delivered: release the whole hold.
    const released = meter.settle(0, 0);
    c.executionCtx.waitUntil(
      released.then(() =>
        record({
          minerId: null,
          instanceId: null,
          attempts: 0,
          outcome: "error",
          errorCode: err instanceof ApiError ? err.code : "internal_error",
          finishReason: null,
          promptTokens: 0,
          completionTokens: 0,
          claimedPromptTokens: null,
          claimedCompletionTokens: null,
          holdNano: meter.holdNano,
          costNano: 0,
          minerEarningsNano: 0,
          ttftMs: null,
        }),
      ),
    );
    throw err;
  });

  const shareBps = numberVar(c.env.MINER_SHARE_BPS, DEFAULT_MINER_SHARE_BPS);
  const relayOptions = (job: Dispatched) => {
    const onEnd = (o: JobOutcome) => {
      const promptTokens = billedPrompt(o.promptTokens);
      const cost = costNano(chute, promptTokens, o.completionTokens, o.cachedPromptTokens ?? 0);
      const settled = meter.settle(cost, promptTokens + o.completionTokens).then((charged) =>
        record({
          minerId: job.minerId,
          instanceId: job.instanceId,
          attempts: job.attempts,
          ...o,
          promptTokens,
          holdNano: meter.holdNano,
          costNano: charged,
          minerEarningsNano: minerShareNano(charged, shareBps),
        }),
      );
      const report: LeaseReport =
        o.outcome === "ok"
          ? { result: "ok", ttftMs: o.ttftMs, tokens: o.completionTokens, streamMs: Date.now() - startedAt - (o.ttftMs ?? 0) }
          : { result: o.outcome === "error" && isInstanceFailure(o.errorCode) ? "failed" : "neutral" };
      c.executionCtx.waitUntil(Promise.all([job.release(report), settled]));
    };
    return { meta, job, startedAt, headers, onEnd, billedPrompt, clientGone: c.get("clientGone"), choices, echo: request.echo, keepAliveMs };
  };
  const headers = { "x-request-id": c.get("requestId"), ...CORS_HEADERS, ...meter.rateHeaders };
  const keepAliveMs = numberVar(c.env.SSE_KEEPALIVE_MS, DEFAULT_SSE_KEEPALIVE_MS);

  if (request.stream) {
    // A slow first token (long prefill, queueing, retries) gets an early 200 with SSE comment
    // keep-alives, so proxies and OpenRouter do not give up on a live request.
    const ready = await within(dispatching.then(() => true, () => true), keepAliveMs, false);
    if (!ready) {
      const { response, done } = keepAliveStream({
        meta,
        headers,
        pending: dispatching,
        start: (job) => relayStream(relayOptions(job)),
        intervalMs: keepAliveMs,
      });
      c.executionCtx.waitUntil(done);
      return response;
    }
  }
  const job = await dispatching;
  const relay = relayOptions(job);
  if (request.spec.kind === "completion" && request.spec.embedding) {
    return relayEmbeddings({ ...relay, inputs: request.spec.embedding.input.length, encoding: request.encoding ?? "float" });
  }
  if (!request.stream) return relayComplete(relay);
  const { response, done } = relayStream(relay);
  c.executionCtx.waitUntil(done);
  return response;
}
