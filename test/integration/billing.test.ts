import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { costNano, minerShareNano, promptTokenBound, worstCaseNano } from "../../worker/billing/pricing.ts";
import type { ChuteRecord } from "../../worker/catalog/types.ts";
import { makeSeed, minerNamed, sha256Hex, newApiKey, TINY_CHUTE, type SeedChute } from "../../scripts/lib/seed.ts";
import { signedHeaders } from "../support/hotkeys.ts";
import { startAgent, tinyEngine, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import type { LeaseSync } from "../../durable-objects/ledger-types.ts";
import { ledgerOf } from "../support/ledger.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../support/upstream-double.ts";

/**
 * Money: holds before dispatch, settles for what was delivered, an append-only ledger whose
 * totals always equal the sum of its entries, and miners credited their share. Everything runs
 * on the real Worker, Durable Objects and D1 in workerd, with real agents.
 */

const chute = { ...TINY_CHUTE, cachedPromptPriceNanoPerM: null } as unknown as ChuteRecord;
const USD = 1_000_000_000;

interface InvocationRow {
  id: string;
  miner_id: string | null;
  outcome: string;
  prompt_tokens: number;
  completion_tokens: number;
  claimed_prompt_tokens: number | null;
  claimed_completion_tokens: number | null;
  hold_nano: number;
  cost_nano: number;
  miner_earnings_nano: number;
}

/** An invocation's row, once written (rows are written in batches, shortly after the response). */
async function invocationRow(gw: Gateway, id: string): Promise<InvocationRow> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const row = await gw.db.prepare("SELECT * FROM invocations WHERE id = ?").bind(id).first<InvocationRow>();
    if (row) return row;
    if (Date.now() > deadline) throw new Error(`no invocation row for ${id}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function invocations(gw: Gateway): Promise<InvocationRow[]> {
  return (await gw.db.prepare("SELECT * FROM invocations ORDER BY created_at").all<InvocationRow>()).results;
}

/** A second account with its own key and credit, inserted as the operator would. */
async function addAccount(gw: Gateway, id: string, creditNano: number): Promise<string> {
  const key = newApiKey();
  await gw.db.batch([
    gw.db.prepare("INSERT INTO accounts (id, name) VALUES (?, ?)").bind(id, id),
    gw.db.prepare("INSERT INTO credits (reference, account_id, amount_nano, source) VALUES (?, ?, ?, 'admin')").bind(`test:${id}`, id, creditNano),
    gw.db
      .prepare("INSERT INTO api_keys (id, account_id, prefix, hash, scopes) VALUES (?, ?, ?, ?, '[\"invoke\"]')")
      .bind(`key-${id}`, id, key.slice(0, 14), sha256Hex(key)),
  ]);
  return key;
}

/** An account funded for 400 of a chat's worst case, with its key and ledger. */
async function fundedForChat(gw: Gateway, id: string, content: string, maxTokens: number) {
  const messages = [{ role: "user" as const, content }];
  const hold = worstCaseNano(chute, { kind: "chat", messages, params: { maxTokens } });
  const creditNano = 400 * hold;
  const key = await addAccount(gw, id, creditNano);
  return { messages, creditNano, key, ledger: await ledgerOf(gw, id) };
}

describe("the ledger (AccountLedger Durable Object)", () => {
  let gw: Gateway;
  beforeAll(async () => {
    gw = await startGateway({ seed: makeSeed({ creditUsd: 1 }) });
  });
  afterAll(() => gw?.close());

  it("starts from the credits recorded in D1, and applies a credit once per reference", async () => {
    const ledger = await ledgerOf(gw, "acct-dev");
    expect(await ledger.summary("acct-dev")).toEqual({ balanceNano: USD, heldNano: 0, availableNano: USD, holds: 0 });
    expect(await ledger.credit("acct-dev", "ref-1", 500)).toEqual({ applied: true, balanceNano: USD + 500 });
    expect(await ledger.credit("acct-dev", "ref-1", 500)).toEqual({ applied: false, balanceNano: USD + 500 });
    // A credit that reached D1 but not the ledger is pulled before a hold is refused.
    await gw.db.prepare("INSERT INTO credits (reference, account_id, amount_nano, source) VALUES ('late', 'acct-dev', 1000, 'admin')").run();
    const hold = await ledger.hold("acct-dev", "needs-late-credit", USD + 1500, 60_000);
    expect(hold.ok).toBe(true);
    expect(await ledger.settle("acct-dev", "needs-late-credit", 0)).toMatchObject({ chargedNano: 0, releasedNano: USD + 1500 });
    expect((await ledger.audit()).ok).toBe(true);
  });

  it("settles once: a replayed settle charges nothing more; a settle never exceeds its hold", async () => {
    const ledger = await ledgerOf(gw, "acct-dev");
    const before = (await ledger.summary("acct-dev")).balanceNano;
    expect(await ledger.hold("acct-dev", "inv-a", 10_000, 60_000)).toMatchObject({ ok: true, holdNano: 10_000 });
    expect(await ledger.hold("acct-dev", "inv-a", 10_000, 60_000)).toMatchObject({ ok: true, holdNano: 10_000 });
    expect((await ledger.summary("acct-dev")).heldNano).toBe(10_000); // the same hold, not two
    expect(await ledger.settle("acct-dev", "inv-a", 4_000)).toEqual({ chargedNano: 4_000, releasedNano: 6_000, replay: false });
    expect(await ledger.settle("acct-dev", "inv-a", 4_000)).toEqual({ chargedNano: 4_000, releasedNano: 6_000, replay: true });
    expect(await ledger.settle("acct-dev", "inv-a", 9_999)).toMatchObject({ chargedNano: 4_000, replay: true });
    await ledger.hold("acct-dev", "inv-b", 1_000, 60_000);
    expect(await ledger.settle("acct-dev", "inv-b", 5_000)).toMatchObject({ chargedNano: 1_000, releasedNano: 0 });
    expect(await ledger.summary("acct-dev")).toMatchObject({ balanceNano: before - 5_000, heldNano: 0 });
    const audit = await ledger.audit();
    expect(audit.ok).toBe(true);
    expect(audit.entriesBalanceNano).toBe(audit.balanceNano);
  });

  it("releases a hold whose request vanished, through its alarm; a late settle still cannot overspend", async () => {
    const ledger = await ledgerOf(gw, "acct-dev");
    const before = await ledger.summary("acct-dev");
    await ledger.hold("acct-dev", "vanished", 7_000, 300);
    expect((await ledger.summary("acct-dev")).heldNano).toBe(7_000);
    await expect.poll(async () => (await ledger.summary("acct-dev")).heldNano, { timeout: 5_000 }).toBe(0);
    const entries = await ledger.entries(5);
    expect(entries[0]).toMatchObject({ kind: "expire", ref: "vanished", amountNano: 0, heldNano: -7_000 });
    // The Worker comes back after all: it is charged, but never beyond what is available.
    await ledger.hold("acct-dev", "big", before.availableNano - 100, 60_000);
    expect(await ledger.settle("acct-dev", "vanished", 7_000)).toMatchObject({ chargedNano: 100 });
    expect((await ledger.summary("acct-dev")).availableNano).toBe(0);
    await ledger.settle("acct-dev", "big", 0);
    expect((await ledger.audit()).ok).toBe(true);
  });

  it("a wallet's lease: charges applied once and never beyond the lease, no shrinking while in use, and a lease whose isolate vanished expires", async () => {
    const ledger = await ledgerOf(gw, "acct-dev");
    const before = await ledger.summary("acct-dev");
    const call = (over: Partial<LeaseSync>) =>
      ledger.lease("acct-dev", { leaseId: "w1", charges: [], mustNano: 0, extraNano: 0, shrink: false, ttlMs: 60_000, rates: [], ...over });
    const opened = await call({ mustNano: 5_000, extraNano: 1_000_000 });
    expect(opened.heldNano).toBe(5_000 + Math.min(1_000_000, Math.floor((before.availableNano - 5_000) / 2)));
    // A charge is applied once: a replay charges nothing more.
    const charged = await call({ charges: [{ id: "inv-w1", costNano: 3_000 }] });
    expect(charged.charged).toEqual({ "inv-w1": 3_000 });
    expect(charged.heldNano).toBe(opened.heldNano - 3_000);
    expect((await call({ charges: [{ id: "inv-w1", costNano: 3_000 }] })).heldNano).toBe(opened.heldNano - 3_000);
    // Several charges in one call (a wallet's batch), one of them twice and one applied before: each once.
    const batch = await call({
      charges: [
        { id: "inv-w1b", costNano: 1_000 },
        { id: "inv-w1", costNano: 3_000 },
        { id: "inv-w1c", costNano: 2_000 },
        { id: "inv-w1b", costNano: 1_000 },
      ],
    });
    expect(batch.charged).toEqual({ "inv-w1b": 1_000, "inv-w1": 3_000, "inv-w1c": 2_000 });
    expect(batch.heldNano).toBe(opened.heldNano - 6_000);
    expect((await ledger.audit()).ok).toBe(true);
    // Asking for less does not shrink it (requests admitted meanwhile rely on it); an idle wallet's shrink does.
    expect((await call({ mustNano: 10 })).heldNano).toBe(opened.heldNano - 6_000);
    expect((await call({ shrink: true })).heldNano).toBe(0);
    expect(await ledger.summary("acct-dev")).toMatchObject({ balanceNano: before.balanceNano - 6_000, heldNano: 0 });
    // A charge beyond what a lease holds takes only what it holds.
    await call({ leaseId: "w3", mustNano: 1_000 });
    expect((await call({ leaseId: "w3", charges: [{ id: "inv-w3", costNano: 5_000 }] })).charged).toEqual({ "inv-w3": 1_000 });
    expect(await ledger.summary("acct-dev")).toMatchObject({ balanceNano: before.balanceNano - 7_000, heldNano: 0, holds: 0 });
    // Charges whose lease is gone (it expired) take what is free, each against what the ones before it left.
    const orphan = await call({ leaseId: "w9", charges: [{ id: "inv-w9a", costNano: 1_500 }, { id: "inv-w9b", costNano: 2_500 }] });
    expect(orphan.charged).toEqual({ "inv-w9a": 1_500, "inv-w9b": 2_500 });
    expect(await ledger.summary("acct-dev")).toMatchObject({ balanceNano: before.balanceNano - 11_000, heldNano: 0, holds: 0 });
    expect((await ledger.audit()).ok).toBe(true);
    // A lease nobody renews is released by the alarm, and the same wallet can lease again after.
    await call({ leaseId: "w2", mustNano: 7_000, ttlMs: 300 });
    await expect.poll(async () => (await ledger.summary("acct-dev")).heldNano, { timeout: 5_000 }).toBe(0);
    await call({ leaseId: "w2", mustNano: 7_000, ttlMs: 300 });
    await expect.poll(async () => (await ledger.summary("acct-dev")).heldNano, { timeout: 5_000 }).toBe(0);
    const kinds = (await ledger.entries(20)).filter((e) => e.ref.startsWith("lease:w2")).map((e) => e.kind);
    expect(kinds).toEqual(["expire", "hold", "expire", "hold"]);
    expect((await ledger.audit()).ok).toBe(true);
  });

  it("100 concurrent holds against a balance that covers 37 of them: exactly 37 are placed", async () => {
    const key = await addAccount(gw, "acct-race", 37 * 1_000 + 999);
    expect(key).toMatch(/^sk-sluice-/);
    const ledger = await ledgerOf(gw, "acct-race");
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ledger.hold("acct-race", `race-${i}`, 1_000, 60_000)));
    expect(results.filter((r) => r.ok)).toHaveLength(37);
    expect(await ledger.summary("acct-race")).toEqual({ balanceNano: 37_999, heldNano: 37_000, availableNano: 999, holds: 37 });
    await Promise.all(results.map((r, i) => (r.ok ? ledger.settle("acct-race", `race-${i}`, 1_000) : null)));
    expect(await ledger.summary("acct-race")).toEqual({ balanceNano: 999, heldNano: 0, availableNano: 999, holds: 0 });
    expect((await ledger.audit()).ok).toBe(true);
  });
});

describe("metering on the real path", () => {
  let p: Platform;
  const credit = 10 * USD;
  beforeAll(async () => {
    // A long queue wait: the concurrency test is about money, not about 429s at saturation.
    p = await startPlatform({ seed: makeSeed({ creditUsd: 10 }), vars: { QUEUE_WAIT_MS: "60000" } });
  });
  afterAll(() => p?.close());

  it("a completed request is charged its usage, the rest of its hold released, the miner credited its share", async () => {
    const res = await p.client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "Tell me a story." }],
      max_tokens: 20,
      temperature: 0,
    });
    const usage = res.usage!;
    expect(usage.completion_tokens).toBe(20);
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    const expected = costNano(chute, usage.prompt_tokens, usage.completion_tokens);
    await expect.poll(async () => (await invocations(p.gw)).find((r) => r.id === res.id)).toMatchObject({
      outcome: "ok",
      prompt_tokens: usage.prompt_tokens,
      completion_tokens: 20,
      claimed_prompt_tokens: usage.prompt_tokens,
      claimed_completion_tokens: 20,
      hold_nano: worstCaseNano(chute, { kind: "chat", messages: [{ role: "user", content: "Tell me a story." }], params: { maxTokens: 20 } }),
      cost_nano: expected,
      miner_earnings_nano: minerShareNano(expected, 8000),
    });
    const ledger = await ledgerOf(p.gw, "acct-dev");
    expect(await ledger.summary("acct-dev")).toEqual({ balanceNano: credit - expected, heldNano: 0, availableNano: credit - expected, holds: 0 });
    const kinds = (await ledger.entries(3)).map((e) => [e.kind, e.ref]);
    expect(kinds).toEqual([["release", res.id], ["settle", res.id], ["hold", res.id]]);
  });

  it("402 insufficient_quota when the balance cannot cover the worst case; nothing is held or charged", async () => {
    const poorKey = await addAccount(p.gw, "acct-poor", 8_000);
    const poor = new OpenAI({ baseURL: p.gw.baseURL, apiKey: poorKey, maxRetries: 0 });
    const res = await fetch(`${p.gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${poorKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 100 }),
    });
    expect(res.status).toBe(402);
    const body = (await res.json()) as { error: { type: string; code: string; message: string; param: null } };
    expect(body.error).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota", param: null });
    expect(body.error.message).toMatch(/\$0\.000008 is available/);
    const err = await poor.completions.create({ model: TINY_CHUTE.name, prompt: "hi", max_tokens: 100 }).catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(402);
    // The router slot asked for alongside the ledger's answer was given back.
    await expect.poll(async () => (await routerSnapshot(p.gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
    // A request small enough for the balance goes through: max_tokens 1 on a short prompt.
    const small = promptTokenBound({ kind: "completion", prompt: "hi", params: { maxTokens: 1 } });
    expect(costNano(chute, small, 1)).toBeLessThanOrEqual(8_000);
    const ok = await poor.completions.create({ model: TINY_CHUTE.name, prompt: "hi", max_tokens: 1 });
    expect(ok.usage?.completion_tokens).toBe(1);
    const ledger = await ledgerOf(p.gw, "acct-poor");
    await expect.poll(async () => (await ledger.summary("acct-poor")).holds).toBe(0);
    const charged = costNano(chute, ok.usage!.prompt_tokens, 1);
    expect(await ledger.summary("acct-poor")).toMatchObject({ balanceNano: 8_000 - charged, heldNano: 0 });
  });

  it("50 concurrent requests against a balance that covers only some: never negative, each charged or refused, charges + balance = credit", async () => {
    const messages = [{ role: "user" as const, content: "Count with me." }];
    const hold = worstCaseNano(chute, { kind: "chat", messages, params: { maxTokens: 24 } });
    const creditNano = 12 * hold + 5;
    const key = await addAccount(p.gw, "acct-fifty", creditNano);
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const res = await fetch(`${p.gw.baseURL}/chat/completions`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model: TINY_CHUTE.name, messages, max_tokens: 24, seed: i, stream: i % 2 === 0 }),
        });
        const text = await res.text();
        return { status: res.status, text };
      }),
    );
    const statuses = outcomes.map((o) => o.status);
    expect(statuses.every((s) => s === 200 || s === 402)).toBe(true);
    const ok = statuses.filter((s) => s === 200).length;
    const refused = statuses.filter((s) => s === 402).length;
    expect(ok).toBeGreaterThanOrEqual(12); // every hold that fit was placed
    expect(refused).toBeGreaterThan(0);
    for (const o of outcomes.filter((o) => o.status === 200)) expect(o.text).not.toContain('"error"');

    const ledger = await ledgerOf(p.gw, "acct-fifty");
    await expect.poll(async () => (await ledger.summary("acct-fifty")).holds, { timeout: 10_000 }).toBe(0);
    const rows = (await p.gw.db.prepare("SELECT * FROM invocations WHERE account_id = 'acct-fifty'").all<InvocationRow>()).results;
    await expect.poll(async () => (await p.gw.db.prepare("SELECT count(*) AS n FROM invocations WHERE account_id = 'acct-fifty'").first<{ n: number }>())?.n).toBe(ok);
    const charged = rows.reduce((s, r) => s + r.cost_nano, 0);
    const summary = await ledger.summary("acct-fifty");
    expect(summary.balanceNano).toBeGreaterThanOrEqual(0);
    expect(charged + summary.balanceNano).toBe(creditNano);
    for (const r of rows) expect(r.cost_nano).toBe(costNano(chute, r.prompt_tokens, r.completion_tokens));
    const audit = await ledger.audit();
    expect(audit.ok).toBe(true);
    const settles = (await ledger.entries(1000)).filter((e) => e.kind === "settle");
    expect(settles).toHaveLength(ok);
  });

  it("a busy account is admitted from this isolate's slice of its balance: no ledger call per request, each charged once, the slice given back when quiet", async () => {
    const { messages, creditNano, key, ledger } = await fundedForChat(p.gw, "acct-busy", "Say something.", 8);
    const ids: string[] = [];
    let leaseSeen = false;
    const holdEntries = async () => (await ledger.entries(1000)).filter((e) => e.kind === "hold" || e.ref.startsWith("lease:")).length;
    let afterFirstWave = 0;
    for (let wave = 0; wave < 3; wave++) {
      const responses = await Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          const res = await fetch(`${p.gw.baseURL}/chat/completions`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body: JSON.stringify({ model: TINY_CHUTE.name, messages, max_tokens: 8, seed: wave * 12 + i }),
          });
          return { status: res.status, body: (await res.json()) as { id: string } };
        }),
      );
      expect(responses.map((r) => r.status)).toEqual(Array(12).fill(200));
      ids.push(...responses.map((r) => r.body.id));
      // While the account is busy the slice is held on the ledger as one lease, not a hold per request.
      leaseSeen ||= (await ledger.entries(1000)).some((e) => e.kind === "hold" && e.ref.startsWith("lease:"));
      if (wave === 0) afterFirstWave = await holdEntries();
    }
    expect(leaseSeen).toBe(true);
    // The first wave is a cold burst: requests that arrive before the first lease is granted each
    // ask the ledger (for the lease). Once it is held, the 24 requests of the next two waves need
    // no hold of their own: at most a top-up of the lease.
    expect((await holdEntries()) - afterFirstWave).toBeLessThanOrEqual(2);
    // Quiet: the rest of the slice goes back.
    await expect.poll(async () => (await ledger.summary("acct-busy")).holds, { timeout: 10_000 }).toBe(0);
    const entries = await ledger.entries(1000);
    const settles = entries.filter((e) => e.kind === "settle");
    expect(settles.map((e) => e.ref).sort()).toEqual([...ids].sort()); // each request charged exactly once
    await expect.poll(async () => (await p.gw.db.prepare("SELECT count(*) AS n FROM invocations WHERE account_id = 'acct-busy'").first<{ n: number }>())?.n).toBe(36);
    const rows = (await p.gw.db.prepare("SELECT * FROM invocations WHERE account_id = 'acct-busy'").all<InvocationRow>()).results;
    for (const r of rows) expect(r.cost_nano).toBe(costNano(chute, r.prompt_tokens, r.completion_tokens));
    const charged = rows.reduce((s, r) => s + r.cost_nano, 0);
    expect(-settles.reduce((s, e) => s + e.amountNano, 0)).toBe(charged);
    expect(await ledger.summary("acct-busy")).toEqual({ balanceNano: creditNano - charged, heldNano: 0, availableNano: creditNano - charged, holds: 0 });
    expect((await ledger.audit()).ok).toBe(true);
  });

  it("a client sending requests one after another is admitted from the slice after its first request: no hold per request", async () => {
    const { messages, creditNano, key, ledger } = await fundedForChat(p.gw, "acct-serial", "One at a time.", 4);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${p.gw.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: TINY_CHUTE.name, messages, max_tokens: 4, seed: i }),
      });
      expect(res.status).toBe(200);
      ids.push(((await res.json()) as { id: string }).id);
    }
    const entries = await ledger.entries(1000);
    const holds = entries.filter((e) => e.kind === "hold");
    // The first request is a lone one (a hold of its own); the ones right after it are admitted
    // from one lease on the account's balance.
    expect(holds.filter((e) => ids.includes(e.ref)).map((e) => e.ref)).toEqual([ids[0]]);
    expect(holds.filter((e) => e.ref.startsWith("lease:"))).toHaveLength(1);
    // Quiet: the slice goes back; each request charged once, and the money reconciles.
    await expect.poll(async () => (await ledger.summary("acct-serial")).holds, { timeout: 10_000 }).toBe(0);
    const settles = (await ledger.entries(1000)).filter((e) => e.kind === "settle");
    expect(settles.map((e) => e.ref).sort()).toEqual([...ids].sort());
    await expect.poll(async () => (await p.gw.db.prepare("SELECT count(*) AS n FROM invocations WHERE account_id = 'acct-serial'").first<{ n: number }>())?.n).toBe(6);
    const rows = (await p.gw.db.prepare("SELECT * FROM invocations WHERE account_id = 'acct-serial'").all<InvocationRow>()).results;
    const charged = rows.reduce((s, r) => s + r.cost_nano, 0);
    expect(charged).toBeGreaterThan(0);
    expect(await ledger.summary("acct-serial")).toEqual({ balanceNano: creditNano - charged, heldNano: 0, availableNano: creditNano - charged, holds: 0 });
    expect((await ledger.audit()).ok).toBe(true);
  });

  it("the miner's earnings endpoint totals its share, and reconciles with what accounts were charged", async () => {
    const miner = p.gw.seed.miners[0]!;
    const unauth = await fetch(`${p.gw.baseURL}/miners/${miner.id}/earnings`, { headers: signedHeaders({ ...miner, secretSeed: "11".repeat(32) }) });
    expect(unauth.status).toBe(401);
    const devLedger = await ledgerOf(p.gw, "acct-dev");
    await expect.poll(async () => (await devLedger.summary("acct-dev")).holds).toBe(0);
    // What the accounts lost is exactly what was charged for the invocations served (their rows
    // are written in batches, shortly after each settle: wait for them).
    let lost = 0;
    for (const acct of ["acct-dev", "acct-poor", "acct-fifty", "acct-busy", "acct-serial"]) {
      const credits = await p.gw.db.prepare("SELECT sum(amount_nano) AS s FROM credits WHERE account_id = ?").bind(acct).first<{ s: number }>();
      lost += credits!.s - (await (await ledgerOf(p.gw, acct)).summary(acct)).balanceNano;
    }
    const servedBy = async () => (await invocations(p.gw)).filter((r) => r.miner_id === miner.id);
    await expect.poll(async () => (await servedBy()).reduce((s, r) => s + r.cost_nano, 0)).toBe(lost);
    const res = await fetch(`${p.gw.baseURL}/miners/${miner.id}/earnings`, { headers: signedHeaders(miner) });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { invocations: number; charged_nano: number; earnings_nano: number; days: { day: string }[] };
    const rows = await invocations(p.gw);
    const served = rows.filter((r) => r.miner_id === miner.id);
    expect(body.invocations).toBe(served.length);
    expect(body.charged_nano).toBe(rows.reduce((s, r) => s + r.cost_nano, 0));
    expect(body.earnings_nano).toBe(rows.reduce((s, r) => s + minerShareNano(r.cost_nano, 8000), 0));
    expect(body.days.map((d) => d.day)).toEqual([new Date().toISOString().slice(0, 10)]);
    expect(lost).toBe(served.reduce((s, r) => s + r.cost_nano, 0));
  });
});

describe("failures and dishonest usage", () => {
  let gw: Gateway;
  let client: OpenAI;
  const upstreams: UpstreamDouble[] = [];
  const agents: AgentProcess[] = [];

  async function upstreamAgent(minerName: string, opts: Parameters<typeof startUpstreamDouble>[0]): Promise<{ upstream: UpstreamDouble; agent: AgentProcess }> {
    const upstream = await startUpstreamDouble(opts);
    upstreams.push(upstream);
    const agent = await startAgent({ gateway: gw.url, miner: minerNamed(gw.seed, minerName), engine: { kind: "openai-upstream", baseURL: upstream.url, model: "m", parallel: 2 } });
    agents.push(agent);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    return { upstream, agent };
  }

  beforeAll(async () => {
    gw = await startGateway({ seed: makeSeed({ minerNames: ["miner-x", "miner-y", "miner-z"], creditUsd: 1 }), vars: { STREAM_IDLE_TIMEOUT_MS: "1500" } });
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
  });
  afterAll(async () => {
    for (const a of agents) a.kill();
    await Promise.all(upstreams.map((u) => u.close()));
    await gw?.close();
  });

  it("an agent killed mid-stream: the charge is exactly the delivered tokens and the rest of the hold is released", async () => {
    const { agent } = await upstreamAgent("miner-x", { delayPerTokenMs: 10, tokens: 200 });
    const stream = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "go" }],
      max_tokens: 200,
      stream: true,
    });
    let text = "";
    const err = await (async () => {
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        if (text.trim().split(/\s+/).length >= 10) agent.kill("SIGKILL");
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const delivered = text.trim().split(/\s+/).length;
    expect(delivered).toBeGreaterThanOrEqual(10);
    expect(delivered).toBeLessThan(200);
    await expect.poll(async () => (await invocations(gw))[0]).toMatchObject({
      outcome: "error",
      completion_tokens: delivered,
      prompt_tokens: 0, // this engine learns the prompt count only at the end; never guessed upward
      cost_nano: costNano(chute, 0, delivered),
    });
    const ledger = await ledgerOf(gw, "acct-dev");
    expect(await ledger.summary("acct-dev")).toMatchObject({ balanceNano: USD - costNano(chute, 0, delivered), heldNano: 0, holds: 0 });
    expect((await ledger.audit()).ok).toBe(true);
    await waitForInstances(gw, TINY_CHUTE.id, 0);
  });

  it("prompt tokens the engine served from its prefix cache are charged at the chute's cached price", async () => {
    for (const a of agents) a.kill();
    await waitForInstances(gw, TINY_CHUTE.id, 0);
    // $0.01 per million cached prompt tokens instead of $0.10.
    await gw.db.prepare("UPDATE chutes SET cached_prompt_price_nano_per_m = 10000000 WHERE id = ?").bind(TINY_CHUTE.id).run();
    const discounted = { ...chute, cachedPromptPriceNanoPerM: 10_000_000 } as ChuteRecord;
    await upstreamAgent("miner-z", { tokens: 4, cachedTokens: 50 });
    // The chute record is cached per isolate for 10 s: wait until the new price is in effect.
    await expect
      .poll(
        async () => {
          const r = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "a long shared prefix" }], max_tokens: 4 });
          const row = await invocationRow(gw, r.id);
          expect(r.usage?.prompt_tokens_details?.cached_tokens).toBe(Math.min(50, r.usage!.prompt_tokens));
          return row.cost_nano === costNano(discounted, row.prompt_tokens, row.completion_tokens, 50);
        },
        { timeout: 15_000, interval: 1_000 },
      )
      .toBe(true);
    await gw.db.prepare("UPDATE chutes SET cached_prompt_price_nano_per_m = NULL WHERE id = ?").bind(TINY_CHUTE.id).run();
    for (const a of agents) a.kill();
    await waitForInstances(gw, TINY_CHUTE.id, 0);
  });

  it("a miner claiming more tokens than it delivered is billed on the gateway's own counts; both are recorded", async () => {
    await upstreamAgent("miner-y", { tokens: 8, claimUsage: { prompt_tokens: 900_000, completion_tokens: 50_000 } });
    const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hey" }], max_tokens: 8 });
    const bound = promptTokenBound({ kind: "chat", messages: [{ role: "user", content: "hey" }], params: { maxTokens: 8 } });
    expect(res.usage).toMatchObject({ prompt_tokens: bound, completion_tokens: 8 });
    await expect.poll(async () => (await invocations(gw)).find((r) => r.id === res.id)).toMatchObject({
      prompt_tokens: bound,
      completion_tokens: 8,
      claimed_prompt_tokens: 900_000,
      claimed_completion_tokens: 50_000,
      cost_nano: costNano(chute, bound, 8),
    });
  });
});

describe("free chutes", () => {
  const FREE: SeedChute = { ...TINY_CHUTE, id: "chute-free", name: "sluice/free-chat", promptPriceNanoPerM: 0, completionPriceNanoPerM: 0 };
  let gw: Gateway;
  let agent: AgentProcess;
  beforeAll(async () => {
    gw = await startGateway({ seed: makeSeed({ chutes: [FREE], creditUsd: 0.000001 }), vars: { FREE_DAILY_REQUESTS: "3" } });
    const miner = gw.seed.miners[0]!;
    agent = await startAgent({ gateway: gw.url, miner, chute: FREE.name, engine: tinyEngine(2) });
    await waitForInstances(gw, FREE.id, 1);
  });
  afterAll(async () => {
    agent?.kill();
    await gw?.close();
  });

  it("need no balance, hold nothing, and stop at the daily quota with a clear 429", async () => {
    const client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
    for (let i = 0; i < 3; i++) {
      const r = await client.chat.completions.create({ model: FREE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 200 });
      expect(r.choices[0]?.message.content).toBeTruthy();
    }
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: FREE.name, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("rate_limit_exceeded");
    expect(body.error.message).toMatch(/3 free requests/);
    const ledger = await ledgerOf(gw, "acct-dev");
    expect((await ledger.entries(100)).filter((e) => e.kind !== "credit")).toEqual([]);
    await expect.poll(async () => (await invocations(gw)).map((r) => r.cost_nano)).toEqual([0, 0, 0]);
  });
});
