import { z } from "zod";
import { ERROR_CODE_NAMES } from "./errors.ts";
import { MAX_CHOICES, MAX_EMBEDDING_INPUTS } from "./inference.ts";
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
  /** True for instances the agent launched on a deploy offer (the scaler may undeploy them). */
  managed: z.boolean().optional(),
  /** Indices (into the agent's GPU inventory) of the GPUs this instance uses. */
  gpus: z.array(z.int().nonnegative().max(255)).max(256).optional(),
});
export type InstanceAnnouncement = z.infer<typeof InstanceAnnouncement>;

/** One GPU of the miner's host, as the agent reports it. */
export const Gpu = z.object({
  index: z.int().nonnegative().max(255),
  /** Model name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`. */
  name: z.string().min(1).max(128),
  /** Total memory, MiB. */
  vramMb: z.int().nonnegative().max(16 * 1024 * 1024),
});
export type Gpu = z.infer<typeof Gpu>;

/** How a chute's model is served; the agent maps each kind to a launcher (built-in or a command). */
export const ChuteEngineKind = z.enum(["llama-cpp", "vllm", "sglang", "openai-upstream"]);
export type ChuteEngineKind = z.infer<typeof ChuteEngineKind>;

/** What an instance of a chute needs, and what to run: sent to agents in deploy offers. */
export const DeploySpec = z.object({
  /** The chute's name (what clients call and what the agent announces). */
  chute: Id,
  modelRef: z.string().min(1).max(512),
  engine: ChuteEngineKind,
  contextLength: z.int().positive(),
  concurrency: z.int().positive().max(1024),
  gpu: z.object({
    count: z.int().nonnegative().max(64),
    minVramMb: z.int().nonnegative(),
    /** Allowed GPU model substrings (case-insensitive); empty = any. */
    types: z.array(z.string().min(1).max(64)).max(32),
  }),
});
export type DeploySpec = z.infer<typeof DeploySpec>;

/**
 * The agent proves its identity by signing `hotkey:nonce:connect` with its sr25519 hotkey
 * (see identity.ts); the hotkey is the frame's `minerId`.
 */
export const Credential = z.discriminatedUnion("type", [
  z.object({ type: z.literal("sr25519"), signature: z.string().regex(/^(0x)?[0-9a-fA-F]{128}$/) }),
]);
export type Credential = z.infer<typeof Credential>;

// ---- gateway -> agent -------------------------------------------------------------------------
export const GatewayFrame = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("challenge"),
    v: z.int(),
    nonce: z.string(),
    /**
     * Once authenticated, the agent may send frames that go out together in one message, one per
     * line (JSON text has no raw newline): e.g. a job's last chunk and its end cost the gateway
     * one message, not two. An agent that does not know this sends one frame per message.
     */
    lines: z.boolean().optional(),
  }),
  z.object({ type: z.literal("welcome"), minerId: Id, sessionId: z.string() }),
  z.object({ type: z.literal("job"), id: JobId, instanceId: Id, spec: JobSpec, traceId: z.string().optional() }),
  z.object({ type: z.literal("cancel"), id: JobId }),
  /** The scaler asks the agent to start an instance; it answers with `deploy_status`. */
  z.object({ type: z.literal("deploy"), offerId: Id, spec: DeploySpec }),
  /** Stop serving an instance: take no new jobs, finish in-flight ones, then free it. */
  z.object({ type: z.literal("undeploy"), instanceId: Id, reason: z.string().max(256) }),
  z.object({ type: z.literal("ping"), t: z.number() }),
  z.object({ type: z.literal("pong"), t: z.number() }),
]);
export type GatewayFrame = z.infer<typeof GatewayFrame>;

/**
 * A job frame as the gateway sends it, in JSON: encoded once by the Worker, which hands the text
 * to the agent's MinerSession (a spec passed as an object was cloned across that RPC and encoded
 * again there, for every request).
 */
export function jobFrame(id: string, instanceId: string, spec: JobSpec, traceId?: string): string {
  const frame: GatewayFrame = { type: "job", id, instanceId, spec, traceId };
  return JSON.stringify(frame);
}

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
  /** Jobs with several choices (v1 addition): which one this frame continues; absent = 0. */
  choice: z.int().min(0).max(MAX_CHOICES - 1).optional(),
});
export const JobDone = z.object({
  type: z.literal("done"),
  id: JobId,
  finishReason: FinishReason,
  /** Jobs with several choices (v1 addition): each one's finish reason (`finishReason` is choice 0's). */
  choices: z.array(z.object({ index: z.int().min(0).max(MAX_CHOICES - 1), finishReason: FinishReason })).max(MAX_CHOICES).optional(),
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
  z.object({
    type: z.literal("auth"),
    v: z.int(),
    /** The hotkey's SS58 address. */
    minerId: Id,
    nonce: z.string().max(128),
    credential: Credential,
    /** The host's GPUs, and whether the agent takes deploy offers (and for which engines). */
    gpus: z.array(Gpu).max(256).default([]),
    offers: z.object({ engines: z.array(ChuteEngineKind).max(8) }).optional(),
    /**
     * Once authenticated, the gateway may send the agent frames that go out together in one
     * message, one per line (the jobs of requests that arrived together). A gateway that does
     * not know this sends one frame per message.
     */
    lines: z.boolean().optional(),
  }),
  z.object({ type: z.literal("capacity"), instances: z.array(InstanceAnnouncement).max(64) }),
  /**
   * A deploy offer's progress: accepted or declined at once; then ready (the instance was
   * health-checked and is in the next capacity frame) or failed.
   */
  z.object({
    type: z.literal("deploy_status"),
    offerId: Id,
    status: z.enum(["accepted", "declined", "ready", "failed"]),
    instanceId: Id.optional(),
    message: z.string().max(1024).optional(),
  }),
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
