import type { Context } from "hono";
import { findChute } from "../catalog/index.ts";
import type { AppEnv } from "../env.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { newResponseId, type Endpoint, type ResponseMeta } from "../openai/format.ts";
import { dispatch } from "./dispatch.ts";
import { modelOf, normalizeChat, normalizeCompletion } from "./normalize.ts";
import { recordInvocation, type InvocationRecord } from "./record.ts";
import { relayComplete, relayStream, type JobOutcome } from "./relay.ts";

/** POST /v1/chat/completions and /v1/completions. */
export async function handleInference(c: Context<AppEnv>, endpoint: Endpoint): Promise<Response> {
  const startedAt = Date.now();
  const body = await readJson(c);
  const key = c.get("apiKey");
  const modelName = modelOf(body);
  const chute = await findChute(c.env.DB, modelName);
  if (!chute || (!chute.public && chute.ownerAccountId !== key.accountId)) {
    throw new ApiError("model_not_found", `The model '${modelName}' does not exist or you do not have access to it.`, "model");
  }
  const request = endpoint === "chat" ? normalizeChat(body, chute) : normalizeCompletion(body, chute);
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
    if (err instanceof ApiError) {
      c.executionCtx.waitUntil(
        record({
          minerId: null,
          instanceId: null,
          attempts: 0,
          outcome: "error",
          errorCode: err.code,
          finishReason: null,
          promptTokens: 0,
          completionTokens: 0,
          ttftMs: null,
        }),
      );
    }
    throw err;
  });

  const onEnd = (o: JobOutcome) => {
    c.executionCtx.waitUntil(
      Promise.all([
        job.release(),
        record({ minerId: job.minerId, instanceId: job.instanceId, attempts: job.attempts, ...o }),
      ]),
    );
  };
  const headers = { "x-request-id": c.get("requestId") };
  const relay = { meta, job, startedAt, headers, onEnd, clientGone: c.get("clientGone") };
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
