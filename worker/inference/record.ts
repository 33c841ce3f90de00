import { getTableColumns, is, SQL, sql } from "drizzle-orm";
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

/** A batch waits this long for more rows before it is written (unless it fills first). */
const LINGER_MS = 100;
/** At most this many rows per D1 call (a row packs to about 300 bytes of its one JSON parameter). */
const MAX_BATCH = 100;

type Row = typeof invocations.$inferInsert;

interface Waiting {
  row: Row;
  /** "written", or "flush": the row is not written yet and this request writes the next batch. */
  resolve: (outcome: "written" | "flush") => void;
}

/**
 * Group commit for invocation rows: the first row of a batch waits LINGER_MS (or until the batch
 * is full) for others, and they go to D1 in one call. A D1 call has a fixed cost far above a
 * row's (in Miniflare about 1.4 ms of the gateway's CPU; in production a round trip), so a busy
 * isolate makes a few calls a second instead of one per request or two. The row is written after
 * the response, so the wait costs the client nothing; the request keeps itself alive (waitUntil)
 * until its row is in. The writing is done by a request whose row is in the batch (a Worker
 * request cannot safely wait on I/O that another request started and may abandon).
 */
class InvocationBatcher {
  private busy = false;
  private waiting: Waiting[] = [];
  /** Ends the writer's linger early (a full batch). */
  private wake: (() => void) | null = null;

  /** Resolves once the row is written (or the failure logged); pass it to waitUntil. */
  async add(db: D1Database, row: Row): Promise<void> {
    if (this.busy) {
      const written = new Promise<"written" | "flush">((resolve) => this.waiting.push({ row, resolve }));
      if (this.waiting.length >= MAX_BATCH) this.wake?.();
      if ((await awaitShared(written)) === "written") return;
    } else {
      this.waiting.unshift({ row, resolve: () => undefined });
      this.busy = true;
    }
    try {
      await this.linger();
      const batch = this.waiting.splice(0, MAX_BATCH);
      await write(db, batch.map((w) => w.row));
      for (const w of batch) w.resolve("written");
    } finally {
      // Rows still waiting: the first of them writes the next batch.
      const next = this.waiting.shift();
      if (next) {
        this.waiting.unshift({ row: next.row, resolve: () => undefined });
        next.resolve("flush");
      } else {
        this.busy = false;
      }
    }
  }

  /** Waits LINGER_MS on this request's own timer, or less when the batch fills meanwhile. */
  private linger(): Promise<void> {
    if (this.waiting.length >= MAX_BATCH) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, LINGER_MS);
      this.wake = done;
    });
  }
}

async function write(db: D1Database, rows: Row[]): Promise<void> {
  const insert = (batch: Row[]) => db.prepare((batchQuery ??= batchTemplate(db))).bind(JSON.stringify(batch.map(packed))).run();
  try {
    await insert(rows);
  } catch (err) {
    // A batch is one statement: one bad row would lose the others, so write them one by one.
    log.warn("invocation.batch_failed", { component: "gateway", rows: rows.length, error: String(err) });
    for (const r of rows) {
      try {
        await insert([r]);
      } catch (e) {
        log.error("invocation.record_failed", { component: "gateway", id: r.id, error: String(e) });
      }
    }
  }
}

const batcher = new InvocationBatcher();

/**
 * The insert, built by drizzle once and bound per call (building a query per row cost more than
 * writing it). A batch is one statement with one parameter: its rows as a JSON array of arrays
 * (COLUMNS order), unpacked by SQLite's json_each. One statement per row cost D1 more per row
 * than the row itself. When a batch fails, each row goes again on its own, a batch of one.
 */
let batchQuery: string | null = null;

const COLUMNS = [
  "id", "accountId", "apiKeyId", "chuteId", "minerId", "instanceId", "endpoint", "stream", "outcome", "errorCode", "finishReason",
  "attempts", "promptTokens", "completionTokens", "claimedPromptTokens", "claimedCompletionTokens", "holdNano", "costNano",
  "minerEarningsNano", "ttftMs", "durationMs",
] as const satisfies readonly (keyof Row)[];
/** Every column but created_at (D1's default) is bound: a new column fails to compile until listed. */
type Unbound = Exclude<keyof Row, (typeof COLUMNS)[number] | "createdAt">;
const everyColumnBound: [Unbound] extends [never] ? true : Unbound = true;
void everyColumnBound;

/** A row as batchTemplate unpacks it. */
function packed(r: Row): unknown[] {
  return COLUMNS.map((c) => (c === "stream" ? (r.stream ? 1 : 0) : (r[c] ?? null)));
}

function batchTemplate(db: D1Database): string {
  // Every column of the table, in its order: the packed value, or the column's default.
  const fields = Object.entries(getTableColumns(invocations)).map(([name, column]) => {
    const at = (COLUMNS as readonly string[]).indexOf(name);
    if (at >= 0) return sql`json_extract(value, ${sql.raw(`'$[${at}]'`)})`;
    if (!is(column.default, SQL)) throw new Error(`invocations.${name} is neither bound nor has an SQL default`);
    return column.default;
  });
  // `where true`: SQLite reads an upsert's ON CONFLICT after a bare FROM as a join constraint.
  const rows = sql`select ${sql.join(fields, sql`, `)} from json_each(${sql.placeholder("rows")}) where true`;
  return drizzle(db).insert(invocations).select(rows).onConflictDoNothing().toSQL().sql;
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
