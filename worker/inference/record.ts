import { fillPlaceholders, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import type { ApiKeyRecord, ChuteRecord } from "../catalog/types.ts";
import { invocations } from "../db/schema.ts";
import { log } from "../log.ts";
import { awaitShared } from "../runtime/shared-wait.ts";
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

/** A batch waits at most this long for more rows before it is written. */
const FLUSH_AFTER_MS = 20;
/** A batch this large is written at once. */
const MAX_BATCH = 50;

type Row = typeof invocations.$inferInsert;

/**
 * Rows waiting to be written, shared by the requests of this isolate: one D1 call per batch
 * instead of one per request (the per-call cost dominated the insert).
 */
class InvocationBatcher {
  private rows: Row[] = [];
  private written: Promise<void> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private release: (() => void) | null = null;

  /** Resolves once the row is written (or the failure logged); pass it to waitUntil. */
  add(db: D1Database, row: Row): Promise<void> {
    this.rows.push(row);
    if (!this.written) {
      this.written = new Promise<void>((resolve) => (this.release = resolve));
      this.timer = setTimeout(() => void this.flush(db), FLUSH_AFTER_MS);
    }
    const written = this.written;
    if (this.rows.length >= MAX_BATCH) void this.flush(db);
    return awaitShared(written);
  }

  private async flush(db: D1Database): Promise<void> {
    const rows = this.rows;
    const release = this.release;
    if (this.timer) clearTimeout(this.timer);
    this.rows = [];
    this.written = null;
    this.release = null;
    this.timer = null;
    if (rows.length === 0) return release?.();
    const insert = (r: Row) => {
      const q = (insertQuery ??= insertTemplate(db));
      return db.prepare(q.sql).bind(...fillPlaceholders(q.params, { ...r, stream: r.stream ? 1 : 0 }));
    };
    try {
      await db.batch(rows.map(insert));
    } catch (err) {
      // A batch is one transaction: one bad row would lose the others, so write them one by one.
      log.warn("invocation.batch_failed", { component: "gateway", rows: rows.length, error: String(err) });
      for (const r of rows) {
        await insert(r).run().catch((e: unknown) => log.error("invocation.record_failed", { component: "gateway", id: r.id, error: String(e) }));
      }
    }
    release?.();
  }
}

const batcher = new InvocationBatcher();

/**
 * The insert, built by drizzle once with a placeholder per column and bound per row (building
 * the query for each row cost more than writing it).
 */
let insertQuery: { sql: string; params: unknown[] } | null = null;

const COLUMNS = [
  "id", "accountId", "apiKeyId", "chuteId", "minerId", "instanceId", "endpoint", "stream", "outcome", "errorCode", "finishReason",
  "attempts", "promptTokens", "completionTokens", "claimedPromptTokens", "claimedCompletionTokens", "holdNano", "costNano",
  "minerEarningsNano", "ttftMs", "durationMs",
] as const satisfies readonly (keyof Row)[];

function insertTemplate(db: D1Database): { sql: string; params: unknown[] } {
  const values = Object.fromEntries(COLUMNS.map((c) => [c, sql.placeholder(c)])) as unknown as Row;
  return drizzle(db).insert(invocations).values(values).onConflictDoNothing().toSQL();
}

/** Emit the invocation's canonical log line and queue its row for D1; resolves once written. */
export function recordInvocation(db: D1Database, r: InvocationRecord): Promise<void> {
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
  return batcher.add(db, {
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
  });
}
