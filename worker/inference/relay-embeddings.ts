import type { JobEvent } from "../../protocol/index.ts";
import { ApiError } from "../errors.ts";
import { embeddingsBody } from "../openai/format.ts";
import type { RelayOptions } from "./relay.ts";

/**
 * Collect an embedding job (vectors in chunk frames, usage in `done`) and answer with one JSON
 * body. The miner's vectors are checked: one per input, every index once, all of one size;
 * anything else is an invalid miner response (502), charged nothing.
 */
export async function relayEmbeddings(opts: RelayOptions & { inputs: number; encoding: "float" | "base64" }): Promise<Response> {
  const { job } = opts;
  const vectors: (string | undefined)[] = new Array<string | undefined>(opts.inputs);
  let ttftMs: number | null = null;
  let ended = false;
  const end = (o: Parameters<RelayOptions["onEnd"]>[0]) => {
    if (ended) return;
    ended = true;
    opts.onEnd(o);
  };
  const fail = (code: ApiError["code"], message: string, claimed: number | null = null): never => {
    end({ outcome: "error", errorCode: code, finishReason: "error", promptTokens: 0, completionTokens: 0, claimedPromptTokens: claimed, claimedCompletionTokens: null, ttftMs });
    void job.cancel().catch(() => undefined);
    throw new ApiError(code, message);
  };
  const gone = () => {
    end({ outcome: "cancelled", errorCode: null, finishReason: null, promptTokens: 0, completionTokens: 0, claimedPromptTokens: null, claimedCompletionTokens: null, ttftMs });
    void job.cancel().catch(() => undefined);
    void job.events.cancel();
  };
  if (opts.clientGone.aborted) gone();
  else opts.clientGone.addEventListener("abort", gone, { once: true });

  let ev: JobEvent | null = job.first;
  while (ev?.type === "chunk") {
    ttftMs ??= opts.job.firstAt - opts.startedAt;
    for (const v of ev.embeddings ?? []) {
      if (v.index >= opts.inputs || vectors[v.index] !== undefined) fail("bad_upstream_response", "The miner sent an invalid response (embedding index).");
      vectors[v.index] = v.base64;
    }
    ev = await job.events.next().catch(() => null);
  }
  if (ended) throw new ApiError("request_timeout", "The client closed the request.");
  if (ev?.type !== "done") {
    const err = ev ?? { code: "miner_disconnected" as const, message: "The miner stopped answering during the request." };
    return fail(err.code, err.message);
  }
  const claimed = ev.usage.promptTokens;
  const complete = vectors.filter((v): v is string => v !== undefined);
  const size = complete[0] === undefined ? 0 : base64Bytes(complete[0]);
  if (complete.length !== opts.inputs || size === 0 || size % 4 !== 0 || complete.some((v) => base64Bytes(v) !== size)) {
    return fail("bad_upstream_response", "The miner sent an invalid response (missing or mismatched embeddings).", claimed);
  }
  end({ outcome: "ok", errorCode: null, finishReason: "stop", promptTokens: claimed, completionTokens: 0, claimedPromptTokens: claimed, claimedCompletionTokens: 0, ttftMs });
  const data = opts.encoding === "base64" ? complete : complete.map(floatsOf);
  const body = embeddingsBody(opts.meta.model, data, opts.billedPrompt(claimed));
  return new Response(JSON.stringify(body), { headers: { ...opts.headers, "content-type": "application/json" } });
}

function base64Bytes(b64: string): number {
  const pad = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return (b64.length / 4) * 3 - pad;
}

/** Little-endian float32 values from base64. */
function floatsOf(b64: string): number[] {
  const bin = atob(b64);
  const view = new DataView(new ArrayBuffer(bin.length));
  for (let i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
  const out: number[] = [];
  for (let i = 0; i + 4 <= bin.length; i += 4) out.push(view.getFloat32(i, true));
  return out;
}
