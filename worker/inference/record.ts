import { drizzle } from "drizzle-orm/d1";
import type { ApiKeyRecord, ChuteRecord } from "../catalog/types.ts";
import { invocations } from "../db/schema.ts";
import { log } from "../log.ts";
import type { Endpoint } from "../openai/format.ts";

export interface InvocationRecord {
  id: string;
  key: ApiKeyRecord;
  chute: ChuteRecord;
  endpoint: Endpoint;
  stream: boolean;
  minerId: string | null;
  instanceId: string | null;
  attempts: number;
  outcome: "ok" | "error" | "cancelled";
  errorCode: string | null;
  finishReason: string | null;
  /** Billed counts. */
  promptTokens: number;
  completionTokens: number;
  /** The miner's counts (null when it sent none). */
  claimedPromptTokens: number | null;
  claimedCompletionTokens: number | null;
  holdNano: number;
  /** What the ledger charged. */
  costNano: number;
  minerEarningsNano: number;
  ttftMs: number | null;
  durationMs: number;
}

/** Append the invocation to D1 and emit its canonical log line. */
export async function recordInvocation(db: D1Database, r: InvocationRecord): Promise<void> {
  const cost = r.costNano;
  log.info("invocation", {
    component: "gateway",
    id: r.id,
    model: r.chute.name,
    minerId: r.minerId,
    outcome: r.outcome,
    errorCode: r.errorCode,
    attempts: r.attempts,
    promptTokens: r.promptTokens,
    completionTokens: r.completionTokens,
    costNano: cost,
    ttftMs: r.ttftMs,
    durationMs: r.durationMs,
  });
  try {
    await drizzle(db)
      .insert(invocations)
      .values({
        id: r.id,
        accountId: r.key.accountId,
        apiKeyId: r.key.id,
        chuteId: r.chute.id,
        minerId: r.minerId,
        instanceId: r.instanceId,
        endpoint: r.endpoint,
        stream: r.stream,
        outcome: r.outcome,
        errorCode: r.errorCode,
        finishReason: r.finishReason,
        attempts: r.attempts,
        promptTokens: r.promptTokens,
        completionTokens: r.completionTokens,
        claimedPromptTokens: r.claimedPromptTokens,
        claimedCompletionTokens: r.claimedCompletionTokens,
        holdNano: r.holdNano,
        costNano: cost,
        minerEarningsNano: r.minerEarningsNano,
        ttftMs: r.ttftMs,
        durationMs: Math.round(r.durationMs),
      })
      .onConflictDoNothing();
  } catch (err) {
    log.error("invocation.record_failed", { component: "gateway", id: r.id, error: String(err) });
  }
}
