import { z } from "zod";
import { ERROR_CODE_NAMES } from "./errors.ts";
import { MAX_EMBEDDING_INPUTS } from "./inference.ts";
import { EmbeddingVector, FinishReason, JobSpec, TokenLogprob, ToolCallDelta, Usage } from "./inference.ts";

/** Wire protocol version; both ends refuse a peer that speaks another. */
export const PROTOCOL_VERSION = 1;
/** Upper bound for one frame in either direction (workerd's own limit is 32 MiB). */
export const MAX_FRAME_BYTES = 1 << 20;

const JobId = z.string().min(1).max(64);
const Id = z.string().min(1).max(128);

export const InstanceAnnouncement = z.object({
  instanceId: Id,
  chute: Id,
  /** Max concurrent requests this instance runs (parallel sequences). */
  maxConcurrency: z.int().positive().max(1024),
});
export type InstanceAnnouncement = z.infer<typeof InstanceAnnouncement>;

/**
 * Credentials the agent proves its identity with. A discriminated union so that the
 * sr25519 hotkey signature can be added beside the per-miner token without touching the rest.
 */
export const Credential = z.discriminatedUnion("type", [
  z.object({ type: z.literal("token"), token: z.string().min(16).max(256) }),
]);
export type Credential = z.infer<typeof Credential>;

// ---- gateway -> agent -------------------------------------------------------------------------
export const GatewayFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("challenge"), v: z.int(), nonce: z.string() }),
  z.object({ type: z.literal("welcome"), minerId: Id, sessionId: z.string() }),
  z.object({ type: z.literal("job"), id: JobId, instanceId: Id, spec: JobSpec, traceId: z.string().optional() }),
  z.object({ type: z.literal("cancel"), id: JobId }),
  z.object({ type: z.literal("ping"), t: z.number() }),
  z.object({ type: z.literal("pong"), t: z.number() }),
]);
export type GatewayFrame = z.infer<typeof GatewayFrame>;

// ---- agent -> gateway -------------------------------------------------------------------------
/**
 * Token deltas; deltas that arrive together are coalesced into one frame. The first chunk of a
 * job carries the prompt's token count when the engine knows it, so a job that fails
 * mid-stream can still be billed for its prompt. `toolCalls` and `logprobs` (optional, v1
 * additions) appear only in jobs that asked for tools or logprobs; `tokens` counts every token
 * the frame holds, text and tool calls alike.
 */
export const JobChunk = z.object({
  type: z.literal("chunk"),
  id: JobId,
  text: z.string(),
  tokens: z.int().positive(),
  promptTokens: z.int().nonnegative().optional(),
  toolCalls: z.array(ToolCallDelta).max(1024).optional(),
  /** One entry per generated text token, in order. */
  logprobs: z.array(TokenLogprob).optional(),
  /** Jobs that asked for the prompt's logprobs: one entry per prompt token, in the first chunk. */
  promptLogprobs: z.array(TokenLogprob).optional(),
  /** Embedding jobs: vectors (text is empty; `tokens` is the inputs' prompt tokens). */
  embeddings: z.array(EmbeddingVector).max(MAX_EMBEDDING_INPUTS).optional(),
});
export const JobDone = z.object({
  type: z.literal("done"),
  id: JobId,
  finishReason: FinishReason,
  usage: Usage,
  timings: z.object({ ttftMs: z.number().nonnegative().nullable(), durationMs: z.number().nonnegative() }),
});
export const JobFailed = z.object({
  type: z.literal("error"),
  id: JobId.or(z.literal("")),
  code: z.enum(ERROR_CODE_NAMES),
  message: z.string().max(4096),
  /** True when nothing was generated, so the gateway may retry elsewhere. */
  retryable: z.boolean(),
});
/** The frames that belong to one job. */
export const JobEvent = z.discriminatedUnion("type", [JobChunk, JobDone, JobFailed]);
export type JobEvent = z.infer<typeof JobEvent>;

export const AgentFrame = z.discriminatedUnion("type", [
  z.object({ type: z.literal("auth"), v: z.int(), minerId: Id, nonce: z.string(), credential: Credential }),
  z.object({ type: z.literal("capacity"), instances: z.array(InstanceAnnouncement).max(64) }),
  JobChunk,
  JobDone,
  JobFailed,
  z.object({ type: z.literal("ping"), t: z.number() }),
  z.object({ type: z.literal("pong"), t: z.number() }),
]);
export type AgentFrame = z.infer<typeof AgentFrame>;

export type ParseResult<T> = { ok: true; frame: T } | { ok: false; error: string };

function parseWith<T>(schema: z.ZodType<T>, raw: string | ArrayBuffer): ParseResult<T> {
  const text = typeof raw === "string" ? raw : new TextDecoder().decode(raw);
  if (text.length > MAX_FRAME_BYTES) return { ok: false, error: "frame too large" };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, error: "frame is not JSON" };
  }
  const r = schema.safeParse(json);
  return r.success ? { ok: true, frame: r.data } : { ok: false, error: z.prettifyError(r.error) };
}

export const parseAgentFrame = (raw: string | ArrayBuffer): ParseResult<AgentFrame> => parseWith(AgentFrame, raw);
export const parseGatewayFrame = (raw: string | ArrayBuffer): ParseResult<GatewayFrame> =>
  parseWith(GatewayFrame, raw);

/** Close codes the gateway uses on agent sockets. */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  policyViolation: 1008,
  authFailed: 4001,
  versionMismatch: 4002,
  replaced: 4003,
  /** The gateway heard nothing (not even a heartbeat) from the agent for too long. */
  stale: 4004,
} as const;
