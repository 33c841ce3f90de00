import { Miniflare } from "miniflare";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { migrationStatements } from "../../scripts/lib/migrations.ts";
import { ROOT } from "../../test/support/paths.ts";
import type { ApiKeyRecord, ChuteRecord } from "../catalog/types.ts";
import { recordInvocation, type InvocationRecord } from "./record.ts";

// The real D1 (Miniflare's, in workerd), with the statements prepared on it counted.
let mf: Miniflare;
let real: D1Database;
const prepared: string[] = [];
const db = {
  prepare: (query: string) => {
    prepared.push(query);
    return real.prepare(query);
  },
} as unknown as D1Database;

// Each record logs its canonical line; the lines are checked where they matter, and kept out of the output.
const logged = { info: vi.spyOn(console, "log").mockImplementation(() => undefined), warn: vi.spyOn(console, "warn").mockImplementation(() => undefined), error: vi.spyOn(console, "error").mockImplementation(() => undefined) };
const events = (spy: typeof logged.error) => spy.mock.calls.map(([line]) => JSON.parse(String(line)) as { event: string; id?: string });

beforeAll(async () => {
  mf = new Miniflare({ modules: true, script: "export default { fetch: () => new Response(null) }", d1Databases: ["DB"] });
  real = (await mf.getD1Database("DB")) as unknown as D1Database;
  await real.batch((await migrationStatements(`${ROOT}/migrations`)).map((s) => real.prepare(s)));
});
afterAll(async () => {
  vi.restoreAllMocks();
  await mf?.dispose();
});

const key = { id: "key-1", accountId: "acct-1" } as ApiKeyRecord;
const chute = { id: "chute-1", name: "acme/tiny" } as ChuteRecord;

function record(id: string, over: Partial<InvocationRecord> = {}): InvocationRecord {
  return {
    id, key, chute, endpoint: "chat", stream: true, minerId: "miner-1", instanceId: "inst-1", attempts: 1,
    outcome: "ok", errorCode: null, finishReason: "stop", promptTokens: 12, completionTokens: 256,
    claimedPromptTokens: 12, claimedCompletionTokens: 260, holdNano: 9_007_199_254_740, costNano: 123_456_789_012,
    minerEarningsNano: 98_765_431_209, ttftMs: 7, durationMs: 41.6,
    ...over,
  };
}

const rowOf = (id: string) => real.prepare("SELECT * FROM invocations WHERE id = ?").bind(id).first<Record<string, unknown>>();

describe("invocation records", () => {
  it("a burst of rows goes to D1 in one statement per batch, each row whole", async () => {
    prepared.length = 0;
    const ids = Array.from({ length: 40 }, (_, i) => `burst-${i}`);
    // One error row among them: nulls, a non-streaming request, a fractional duration.
    const error = record("burst-error", {
      stream: false, minerId: null, instanceId: null, attempts: 3, outcome: "error", errorCode: "no_capacity",
      finishReason: null, promptTokens: 0, completionTokens: 0, claimedPromptTokens: null, claimedCompletionTokens: null,
      costNano: 0, minerEarningsNano: 0, ttftMs: null, durationMs: 2000.4,
    });
    await Promise.all([...ids.map((id) => recordInvocation(db, record(id))), recordInvocation(db, error)]);

    // The first row waits for the others, and they go together: one statement.
    expect(prepared).toHaveLength(1);
    const { n } = (await real.prepare("SELECT count(*) AS n FROM invocations WHERE id LIKE 'burst-%'").first<{ n: number }>())!;
    expect(n).toBe(41);
    expect(await rowOf("burst-17")).toMatchObject({
      account_id: "acct-1", api_key_id: "key-1", chute_id: "chute-1", miner_id: "miner-1", instance_id: "inst-1",
      endpoint: "chat", stream: 1, outcome: "ok", error_code: null, finish_reason: "stop", attempts: 1,
      prompt_tokens: 12, completion_tokens: 256, claimed_prompt_tokens: 12, claimed_completion_tokens: 260,
      hold_nano: 9_007_199_254_740, cost_nano: 123_456_789_012, miner_earnings_nano: 98_765_431_209, ttft_ms: 7, duration_ms: 42,
    });
    expect(await rowOf("burst-error")).toMatchObject({
      stream: 0, miner_id: null, instance_id: null, attempts: 3, outcome: "error", error_code: "no_capacity", finish_reason: null,
      claimed_prompt_tokens: null, claimed_completion_tokens: null, cost_nano: 0, ttft_ms: null, duration_ms: 2000,
    });
    // created_at is the column's own default (epoch ms), as for a row inserted without it.
    const { created_at } = (await rowOf("burst-3"))!;
    expect(Math.abs(Number(created_at) - Date.now())).toBeLessThan(60_000);
  });

  it("a row waits for others a while, and a full batch goes at once", async () => {
    prepared.length = 0;
    const started = Date.now();
    await recordInvocation(db, record("lone"));
    // A lone row lingers for company (100 ms), then goes on its own.
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    expect(prepared).toHaveLength(1);
    expect(await rowOf("lone")).toMatchObject({ id: "lone" });

    // 250 rows at once: two full batches of 100 go without waiting out the linger, the rest after it.
    prepared.length = 0;
    const ids = Array.from({ length: 250 }, (_, i) => `many-${i}`);
    const writes = new Map<number, number>();
    const burst = Date.now();
    await Promise.all(ids.map((id, i) => recordInvocation(db, record(id)).then(() => writes.set(i, Date.now()))));
    expect(prepared).toHaveLength(3);
    const { n } = (await real.prepare("SELECT count(*) AS n FROM invocations WHERE id LIKE 'many-%'").first<{ n: number }>())!;
    expect(n).toBe(250);
    // The full batches did not wait out the linger; the last fifty did.
    expect(writes.get(199)! - burst).toBeLessThan(100);
    expect(writes.get(249)! - burst).toBeGreaterThanOrEqual(90);
  });

  it("a row D1 refuses does not lose the rows batched with it", async () => {
    prepared.length = 0;
    const ids = Array.from({ length: 10 }, (_, i) => `mixed-${i}`);
    // account_id is NOT NULL: this row fails, and with it the statement its batch went in.
    const bad = record("mixed-bad", { key: { ...key, accountId: null as unknown as string } });
    await Promise.all([recordInvocation(db, record("mixed-first")), recordInvocation(db, bad), ...ids.map((id) => recordInvocation(db, record(id)))]);

    const rows = await real.prepare("SELECT id FROM invocations WHERE id LIKE 'mixed-%' ORDER BY id").all<{ id: string }>();
    expect(rows.results.map((r) => r.id)).toEqual(["mixed-0", "mixed-1", "mixed-2", "mixed-3", "mixed-4", "mixed-5", "mixed-6", "mixed-7", "mixed-8", "mixed-9", "mixed-first"]);
    // The batch failed whole, then its rows went one by one; the one refused is logged.
    expect(prepared.length).toBeGreaterThan(2);
    expect(events(logged.warn)).toContainEqual(expect.objectContaining({ event: "invocation.batch_failed" }));
    expect(events(logged.error)).toEqual([expect.objectContaining({ event: "invocation.record_failed", id: "mixed-bad" })]);
  });

  it("a row recorded twice (a retried write) is kept once", async () => {
    await recordInvocation(db, record("twice", { completionTokens: 5 }));
    await recordInvocation(db, record("twice", { completionTokens: 6 }));
    const { n } = (await real.prepare("SELECT count(*) AS n FROM invocations WHERE id = 'twice'").first<{ n: number }>())!;
    expect(n).toBe(1);
    expect(await rowOf("twice")).toMatchObject({ completion_tokens: 5 });
  });
});
