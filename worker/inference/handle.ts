import type { Context } from "hono";
import { findChute } from "../catalog/index.ts";
import type { AppEnv } from "../env.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { newResponseId, type Endpoint, type ResponseMeta } from "../openai/format.ts";
import { openMeter } from "../billing/ledger.ts";
import { costNano, minerShareNano, promptTokenBound } from "../billing/pricing.ts";
import type { LeaseReport } from "../../durable-objects/chute-router.ts";
import { dispatch, isInstanceFailure } from "./dispatch.ts";
import { modelOf, normalize } from "./normalize.ts";
import { recordInvocation, type InvocationRecord } from "./record.ts";
import { relayComplete, relayStream, type JobOutcome } from "./relay.ts";
import { relayEmbeddings } from "./relay-embeddings.ts";

/** The serving miner's share of each charge when MINER_SHARE_BPS is unset. */
const DEFAULT_MINER_SHARE_BPS = 8000;

/** POST /v1/chat/completions, /v1/completions and /v1/embeddings. */
export async function handleInference(c: Context<AppEnv>, endpoint: Endpoint): Promise<Response> {
  const startedAt = Date.now();
  const body = await readJson(c);
  const key = c.get("apiKey");
  const modelName = modelOf(body);
  const chute = await findChute(c.env.DB, modelName);
  if (!chute || (!chute.public && chute.ownerAccountId !== key.accountId)) {
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

  // Reserve the worst case before any work is done (402 when the balance cannot cover it).
  const meter = await openMeter(c.env, key, chute, request.spec, meta.id);
  const promptBound = promptTokenBound(request.spec);
  const billedPrompt = (claimed: number) => Math.min(claimed, promptBound);

  const job = await dispatch({
    env: c.env,
    chute,
    request,
    jobId: meta.id,
    traceId: c.get("requestId"),
    queueWaitMs: numberVar(c.env.QUEUE_WAIT_MS, 2000),
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
  const headers = { "x-request-id": c.get("requestId"), ...meter.rateHeaders };
  const relay = { meta, job, startedAt, headers, onEnd, billedPrompt, clientGone: c.get("clientGone"), echo: request.echo };
  if (request.spec.kind === "completion" && request.spec.embedding) {
    return relayEmbeddings({ ...relay, inputs: request.spec.embedding.input.length, encoding: request.encoding ?? "float" });
  }
  if (!request.stream) return relayComplete(relay);
  const { response, done } = relayStream(relay);
  c.executionCtx.waitUntil(done);
  return response;
}

async function readJson(c: Context<AppEnv>): Promise<unknown> {
  const type = c.req.header("content-type") ?? "";
  if (type && !type.toLowerCase().includes("json")) {
    throw new ApiError("unsupported_media_type", "The request body must be JSON (content-type: application/json).");
  }
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "We could not parse the JSON body of your request.");
  }
}
