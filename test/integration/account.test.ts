import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEV_KEY_SCOPES, newApiKey, sha256Hex, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { usdString } from "../../worker/billing/pricing.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";

/** The account-facing API: balance, usage and API keys, each confined to the caller's account. */

const SEED_CREDIT_NANO = 10_000_000_000;
const B_CREDIT_NANO = 2_500_000_000;

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}
interface AccountBody {
  object: "account";
  id: string;
  name: string;
  balance_nano: number;
  held_nano: number;
  available_nano: number;
  holds_in_flight: number;
  balance_usd: string;
  available_usd: string;
}
interface UsageRow {
  day?: string;
  model?: string;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_nano: number;
  cost_usd: string;
}
interface UsageBody {
  object: "list";
  group_by: "day" | "model";
  from: string;
  to: string;
  data: UsageRow[];
}
interface KeyBody {
  object: "api_key";
  id: string;
  key?: string;
  prefix: string;
  name: string;
  scopes: string[];
  expires_at: number | null;
  revoked_at?: number | null;
  created_at: number;
}
interface KeyList {
  object: "list";
  data: KeyBody[];
}

interface Reply<T> {
  status: number;
  body: T;
  text: string;
}

async function call<T>(gw: Gateway, key: string, method: string, path: string, body?: unknown): Promise<Reply<T>> {
  const res = await fetch(`${gw.baseURL}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as T, text };
}

function expectError(r: Reply<unknown>, status: number, code: string, param: string | null = null) {
  expect(r.status).toBe(status);
  const body = r.body as ErrorBody;
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(body.error).toMatchObject({ code, param });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowSeconds = () => Math.floor(Date.now() / 1000);
const chat = { model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 4 };

/** A second account, written to D1 the way the seed writes one: a credit and a key with every scope. */
async function insertAccount(gw: Gateway, id: string, creditNano: number): Promise<{ key: string; keyId: string }> {
  const key = newApiKey();
  const keyId = `key-${id}`;
  await gw.db.batch([
    gw.db.prepare("INSERT INTO accounts (id, name) VALUES (?, ?)").bind(id, id),
    gw.db.prepare("INSERT INTO credits (reference, account_id, amount_nano, source) VALUES (?, ?, ?, 'seed')").bind(`seed:${id}`, id, creditNano),
    gw.db
      .prepare("INSERT INTO api_keys (id, account_id, name, prefix, hash, scopes) VALUES (?, ?, ?, ?, ?, ?)")
      .bind(keyId, id, "b", key.slice(0, 14), sha256Hex(key), JSON.stringify(DEV_KEY_SCOPES)),
  ]);
  return { key, keyId };
}

interface FakeInvocation {
  account: string;
  chute: string;
  at: string;
  prompt: number;
  completion: number;
  cost: number;
}

/** Invocation rows at fixed past times, for exact range and grouping checks. */
async function insertInvocations(gw: Gateway, rows: FakeInvocation[]): Promise<void> {
  await gw.db.batch(
    rows.map((r, i) =>
      gw.db
        .prepare(
          `INSERT INTO invocations (id, account_id, api_key_id, chute_id, endpoint, stream, outcome, attempts,
             prompt_tokens, completion_tokens, cost_nano, duration_ms, created_at)
           VALUES (?, ?, 'key-x', ?, 'chat', 0, 'ok', 1, ?, ?, ?, 1, ?)`,
        )
        .bind(`fake-${i}`, r.account, r.chute, r.prompt, r.completion, r.cost, Date.parse(r.at)),
    ),
  );
}

describe("account API (no miner)", () => {
  let gw: Gateway;
  let devKey: string;
  let b: { key: string; keyId: string };
  const create = (key: string, body: unknown) => call<KeyBody>(gw, key, "POST", "/keys", body);

  beforeAll(async () => {
    gw = await startGateway();
    devKey = gw.seed.apiKey;
    b = await insertAccount(gw, "acct-b", B_CREDIT_NANO);
    await gw.db
      .prepare(
        `INSERT INTO chutes (id, name, owner_account_id, model_ref, engine, context_length, max_output_tokens, public)
         VALUES ('chute-other', 'acme/other', 'acct-dev', 'x', 'openai-upstream', 1024, 64, 0)`,
      )
      .run();
    await insertInvocations(gw, [
      { account: "acct-dev", chute: TINY_CHUTE.id, at: "2025-03-01T10:00:00Z", prompt: 10, completion: 5, cost: 100 },
      { account: "acct-dev", chute: "chute-other", at: "2025-03-01T23:59:59.999Z", prompt: 20, completion: 10, cost: 300 },
      { account: "acct-dev", chute: TINY_CHUTE.id, at: "2025-03-02T00:00:00Z", prompt: 1, completion: 2, cost: 7 },
      { account: "acct-dev", chute: "chute-gone", at: "2025-03-03T12:00:00Z", prompt: 4, completion: 4, cost: 11 },
      { account: "acct-b", chute: TINY_CHUTE.id, at: "2025-03-01T12:00:00Z", prompt: 1000, completion: 1000, cost: 1_500_000_000 },
      { account: "acct-b", chute: TINY_CHUTE.id, at: "2025-03-02T12:00:00Z", prompt: 3, completion: 3, cost: 9 },
    ]);
  });
  afterAll(() => gw?.close());

  describe("GET /v1/account", () => {
    it("shows the seeded $10 credit as the balance, nothing held", async () => {
      const r = await call<AccountBody>(gw, devKey, "GET", "/account");
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        object: "account",
        id: "acct-dev",
        name: "dev",
        balance_nano: SEED_CREDIT_NANO,
        held_nano: 0,
        available_nano: SEED_CREDIT_NANO,
        holds_in_flight: 0,
        balance_usd: "10",
        available_usd: "10",
      });
    });

    it("401 without a key or with a wrong one", async () => {
      expectError(await call(gw, "", "GET", "/account"), 401, "invalid_api_key");
      expectError(await call(gw, "sk-sluice-nope", "GET", "/usage"), 401, "invalid_api_key");
    });
  });

  describe("GET /v1/usage", () => {
    const usage = (key: string, query: string) => call<UsageBody>(gw, key, "GET", `/usage?${query}`);
    const row = (k: "day" | "model", v: string, requests: number, prompt: number, completion: number, cost: number, usd: string): UsageRow => ({
      [k]: v,
      requests,
      prompt_tokens: prompt,
      completion_tokens: completion,
      cost_nano: cost,
      cost_usd: usd,
    });

    it("groups by UTC day over an inclusive date range, sorted", async () => {
      const r = await usage(devKey, "from=2025-03-01&to=2025-03-02&group_by=day");
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        object: "list",
        group_by: "day",
        from: "2025-03-01T00:00:00.000Z",
        to: "2025-03-02T23:59:59.999Z",
        data: [row("day", "2025-03-01", 2, 30, 15, 400, "0.0000004"), row("day", "2025-03-02", 1, 1, 2, 7, "0.000000007")],
      });
    });

    it("groups by model (the chute's name; a deleted chute under its id), sorted", async () => {
      const r = await usage(devKey, "from=2025-03-01&to=2025-03-03&group_by=model");
      expect(r.body.data).toEqual([
        row("model", "acme/other", 1, 20, 10, 300, "0.0000003"),
        row("model", "chute-gone", 1, 4, 4, 11, "0.000000011"),
        row("model", TINY_CHUTE.name, 2, 11, 7, 107, "0.000000107"),
      ]);
    });

    it("takes ISO timestamps as bounds, both inclusive", async () => {
      const r = await usage(devKey, "from=2025-03-01T23:59:59.999Z&to=2025-03-02T01:00:00%2B01:00");
      expect(r.status).toBe(200);
      expect(r.body.from).toBe("2025-03-01T23:59:59.999Z");
      expect(r.body.to).toBe("2025-03-02T00:00:00.000Z");
      expect(r.body.data.map((d) => [d.day, d.requests, d.cost_nano])).toEqual([
        ["2025-03-01", 1, 300],
        ["2025-03-02", 1, 7],
      ]);
    });

    it("defaults to the last 30 days, grouped by day", async () => {
      const r = await usage(devKey, "");
      expect(r.status).toBe(200);
      expect(r.body.group_by).toBe("day");
      const to = Date.parse(r.body.to);
      expect(Math.abs(to - Date.now())).toBeLessThan(60_000);
      expect(to - Date.parse(r.body.from)).toBeCloseTo(30 * 86_400_000, -3);
      expect(r.body.data.filter((d) => d.day!.startsWith("2025-03"))).toEqual([]);
    });

    it("400 with param for bad query values", async () => {
      expectError(await usage(devKey, "from=yesterday"), 400, "invalid_request", "from");
      expectError(await usage(devKey, "from=2025-02-30"), 400, "invalid_request", "from");
      expectError(await usage(devKey, "to=2025-03-01T00:00:00"), 400, "invalid_request", "to"); // no zone
      expectError(await usage(devKey, "from=2025-03-02&to=2025-03-01"), 400, "invalid_request", "to");
      expectError(await usage(devKey, "group_by=week"), 400, "invalid_request", "group_by");
    });

    it("403 for a key without usage:read", async () => {
      const k = await create(devKey, { scopes: ["invoke"] });
      expectError(await usage(k.body.key!, ""), 403, "permission_denied");
    });
  });

  describe("API keys", () => {
    it("creates a key that works for /v1/models and inference, shown once", async () => {
      const before = nowSeconds();
      const r = await create(devKey, { name: "ci", scopes: ["invoke"] });
      expect(r.status).toBe(201);
      const k = r.body;
      expect(Object.keys(k).sort()).toEqual(["created_at", "expires_at", "id", "key", "name", "object", "prefix", "scopes"]);
      expect(k).toMatchObject({ object: "api_key", name: "ci", scopes: ["invoke"], expires_at: null });
      expect(k.key).toMatch(/^sk-sluice-[A-Za-z0-9_-]{43}$/);
      expect(k.prefix).toBe(k.key!.slice(0, 14));
      expect(k.created_at).toBeGreaterThanOrEqual(before);
      expect(k.created_at).toBeLessThanOrEqual(nowSeconds());

      expect((await call(gw, k.key!, "GET", "/models")).status).toBe(200);
      // Past auth: no miner serves the model here, so the invoke scope is what lets it reach 503.
      expectError(await call(gw, k.key!, "POST", "/chat/completions", chat), 503, "no_capacity");
      // ...and it has no other scope.
      expectError(await call(gw, k.key!, "GET", "/account"), 403, "permission_denied");
      expectError(await call(gw, k.key!, "GET", "/keys"), 403, "permission_denied");
    });

    it("defaults to the invoke scope, with or without a body", async () => {
      const empty = await call<KeyBody>(gw, devKey, "POST", "/keys");
      expect(empty.status).toBe(201);
      expect(empty.body).toMatchObject({ scopes: ["invoke"], name: "", expires_at: null });
      expect((await create(devKey, { name: "x" })).body.scopes).toEqual(["invoke"]);
    });

    it("lists the account's keys without secrets or hashes", async () => {
      const made = await create(devKey, { name: "listed", scopes: ["invoke", "usage:read"] });
      const r = await call<KeyList>(gw, devKey, "GET", "/keys");
      expect(r.status).toBe(200);
      expect(r.body.object).toBe("list");
      for (const k of r.body.data) {
        expect(Object.keys(k).sort()).toEqual(["created_at", "expires_at", "id", "name", "object", "prefix", "revoked_at", "scopes"]);
      }
      const ids = r.body.data.map((k) => k.id);
      expect(ids).toContain(gw.seed.apiKeyId);
      expect(ids).not.toContain(b.keyId);
      expect(r.body.data.find((k) => k.id === made.body.id)).toEqual({
        object: "api_key",
        id: made.body.id,
        prefix: made.body.prefix,
        name: "listed",
        scopes: ["invoke", "usage:read"],
        expires_at: null,
        revoked_at: null,
        created_at: made.body.created_at,
      });
      expect(r.body.data.find((k) => k.id === gw.seed.apiKeyId)!.scopes).toEqual(DEV_KEY_SCOPES);
      for (const secret of [made.body.key!, devKey]) {
        expect(r.text).not.toContain(secret);
        expect(r.text).not.toContain(sha256Hex(secret));
      }
    });

    it("grants only scopes the creating key has (403 param scopes); unknown scopes are 400", async () => {
      const manager = await create(devKey, { scopes: ["invoke", "keys:manage"] });
      expect(manager.status).toBe(201);
      expectError(await create(manager.body.key!, { scopes: ["usage:read"] }), 403, "permission_denied", "scopes");
      expectError(await create(manager.body.key!, { scopes: ["invoke", "chutes:manage"] }), 403, "permission_denied", "scopes");
      expect((await create(manager.body.key!, { scopes: ["invoke", "keys:manage"] })).status).toBe(201);
      expectError(await create(devKey, { scopes: ["admin"] }), 400, "invalid_request", "scopes[0]");
      expectError(await create(devKey, { scopes: [] }), 400, "invalid_request", "scopes");
    });

    it("a key without invoke gets 403 on inference", async () => {
      const reader = await create(devKey, { scopes: ["usage:read"] });
      expectError(await call(gw, reader.body.key!, "POST", "/chat/completions", chat), 403, "permission_denied");
      expectError(await call(gw, reader.body.key!, "GET", "/models"), 403, "permission_denied");
      expect((await call(gw, reader.body.key!, "GET", "/account")).status).toBe(200);
    });

    it("400 with param for bad bodies", async () => {
      expectError(await create(devKey, { expires_at: nowSeconds() - 10 }), 400, "invalid_request", "expires_at");
      expectError(await create(devKey, { expires_at: "tomorrow" }), 400, "invalid_request", "expires_at");
      expectError(await create(devKey, { expires_at: 1.5 }), 400, "invalid_request", "expires_at");
      expectError(await create(devKey, { name: 7 }), 400, "invalid_request", "name");
      expectError(await create(devKey, { scope: ["invoke"] }), 400, "invalid_request", "scope");
      expectError(await create(devKey, "{nope"), 400, "invalid_json");
      expectError(await create(devKey, "[]"), 400, "invalid_request");
    });

    it("refuses an expired key with 401", async () => {
      const expiresAt = Math.ceil(Date.now() / 1000) + 2;
      const k = await create(devKey, { expires_at: expiresAt });
      expect(k.status).toBe(201);
      expect(k.body.expires_at).toBe(expiresAt);
      expect((await call(gw, k.body.key!, "GET", "/models")).status).toBe(200);
      await sleep(expiresAt * 1000 - Date.now() + 100);
      expectError(await call(gw, k.body.key!, "GET", "/models"), 401, "invalid_api_key");
    });

    it("a key cannot outlive the key that creates it", async () => {
      const parentExpiry = nowSeconds() + 600;
      const parent = await create(devKey, { scopes: ["invoke", "keys:manage"], expires_at: parentExpiry });
      const child = await create(parent.body.key!, {});
      expect(child.status).toBe(201);
      expect(child.body.expires_at).toBe(parentExpiry);
      expect((await create(parent.body.key!, { expires_at: parentExpiry - 60 })).body.expires_at).toBe(parentExpiry - 60);
      expectError(await create(parent.body.key!, { expires_at: null }), 403, "permission_denied", "expires_at");
      expectError(await create(parent.body.key!, { expires_at: parentExpiry + 1 }), 403, "permission_denied", "expires_at");
    });

    it("revokes a key: refused with 401 within seconds, listed as revoked", async () => {
      const k = await create(devKey, { name: "doomed" });
      expect((await call(gw, k.body.key!, "GET", "/models")).status).toBe(200); // now cached
      const del = await call(gw, devKey, "DELETE", `/keys/${k.body.id}`);
      expect(del.status).toBe(200);
      expect(del.body).toEqual({ object: "api_key", id: k.body.id, deleted: true });
      const started = Date.now();
      while ((await call(gw, k.body.key!, "GET", "/models")).status !== 401) {
        expect(Date.now() - started).toBeLessThan(6_000);
        await sleep(100);
      }
      expect(Date.now() - started).toBeLessThan(6_000);
      const listed = (await call<KeyList>(gw, devKey, "GET", "/keys")).body.data.find((x) => x.id === k.body.id);
      expect(listed!.revoked_at).toBeGreaterThanOrEqual(Math.floor(started / 1000) - 1);
    });

    it("404 for an unknown key id", async () => {
      expectError(await call(gw, devKey, "DELETE", "/keys/key-does-not-exist"), 404, "not_found", "id");
    });
  });

  describe("across accounts", () => {
    it("B's key sees B's account, not A's", async () => {
      const r = await call<AccountBody>(gw, b.key, "GET", "/account");
      expect(r.body).toMatchObject({ id: "acct-b", balance_nano: B_CREDIT_NANO, available_nano: B_CREDIT_NANO, balance_usd: "2.5" });
    });

    it("B's usage holds only B's invocations", async () => {
      const r = await call<UsageBody>(gw, b.key, "GET", "/usage?from=2025-03-01&to=2025-03-03&group_by=model");
      expect(r.body.data).toEqual([
        { model: TINY_CHUTE.name, requests: 2, prompt_tokens: 1003, completion_tokens: 1003, cost_nano: 1_500_000_009, cost_usd: "1.500000009" },
      ]);
      const a = await call<UsageBody>(gw, devKey, "GET", "/usage?from=2025-03-01&to=2025-03-03&group_by=day");
      expect(a.body.data.reduce((n, d) => n + d.requests, 0)).toBe(4);
    });

    it("B lists only B's keys, and cannot revoke A's (404; the key keeps working)", async () => {
      const bKeys = (await call<KeyList>(gw, b.key, "GET", "/keys")).body.data.map((k) => k.id);
      expect(bKeys).toEqual([b.keyId]);
      expectError(await call(gw, b.key, "DELETE", `/keys/${gw.seed.apiKeyId}`), 404, "not_found", "id");
      expect((await call(gw, devKey, "GET", "/account")).status).toBe(200);
      expect((await call(gw, devKey, "GET", "/models")).status).toBe(200);
    });

    it("A cannot revoke B's key either", async () => {
      expectError(await call(gw, devKey, "DELETE", `/keys/${b.keyId}`), 404, "not_found", "id");
      expect((await call(gw, b.key, "GET", "/account")).status).toBe(200);
      const listed = (await call<KeyList>(gw, b.key, "GET", "/keys")).body.data;
      expect(listed.map((k) => k.revoked_at)).toEqual([null]);
    });
  });
});

describe("usage of real invocations", () => {
  let platform: Platform;
  let gw: Gateway;
  let client: OpenAI;

  beforeAll(async () => {
    platform = await startPlatform();
    ({ gw, client } = platform);
  });
  afterAll(() => platform?.close());

  it("usage by model and by day sums the invocations; the balance is $10 less their cost", async () => {
    const model = TINY_CHUTE.name;
    const messages = [{ role: "user" as const, content: "Tell me about the cat." }];
    const usages: OpenAI.CompletionUsage[] = [];
    const a = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
    usages.push(a.usage!);
    const stream = await client.chat.completions.create({
      model,
      messages,
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) if (chunk.usage) usages.push(chunk.usage);
    const c = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 5 });
    usages.push(c.usage!);
    expect(usages).toHaveLength(3);

    interface Row {
      prompt_tokens: number;
      completion_tokens: number;
      cost_nano: number;
      created_at: number;
    }
    const rowsOf = async () =>
      (
        await gw.db
          .prepare("SELECT prompt_tokens, completion_tokens, cost_nano, created_at FROM invocations WHERE account_id = ?")
          .bind(gw.seed.accountId)
          .all<Row>()
      ).results;
    // Settles and records run after the response (waitUntil); a record is written after its settle.
    await expect.poll(async () => (await rowsOf()).length, { timeout: 10_000 }).toBe(3);
    const rows = await rowsOf();
    const total = (rs: Row[]) => ({
      requests: rs.length,
      prompt_tokens: rs.reduce((n, r) => n + r.prompt_tokens, 0),
      completion_tokens: rs.reduce((n, r) => n + r.completion_tokens, 0),
      cost_nano: rs.reduce((n, r) => n + r.cost_nano, 0),
    });
    const sum = total(rows);
    expect(sum.cost_nano).toBeGreaterThan(0);
    // What the clients were told is what was recorded.
    expect(sum.prompt_tokens).toBe(usages.reduce((n, u) => n + u.prompt_tokens, 0));
    expect(sum.completion_tokens).toBe(usages.reduce((n, u) => n + u.completion_tokens, 0));

    const byModel = await call<UsageBody>(gw, gw.seed.apiKey, "GET", "/usage?group_by=model");
    expect(byModel.body.data).toEqual([{ model, ...sum, cost_usd: usdString(sum.cost_nano) }]);

    const days = new Map<string, Row[]>();
    for (const r of rows) {
      const day = new Date(r.created_at).toISOString().slice(0, 10);
      days.set(day, [...(days.get(day) ?? []), r]);
    }
    const byDay = await call<UsageBody>(gw, gw.seed.apiKey, "GET", "/usage?group_by=day");
    expect(byDay.body.data.map(({ cost_usd: _usd, ...d }) => d)).toEqual(
      [...days.keys()].sort().map((day) => ({ day, ...total(days.get(day)!) })),
    );

    const balance = SEED_CREDIT_NANO - sum.cost_nano;
    await expect
      .poll(async () => (await call<AccountBody>(gw, gw.seed.apiKey, "GET", "/account")).body, { timeout: 10_000 })
      .toMatchObject({ balance_nano: balance, held_nano: 0, available_nano: balance, holds_in_flight: 0 });
    const account = (await call<AccountBody>(gw, gw.seed.apiKey, "GET", "/account")).body;
    expect([account.balance_usd, account.available_usd]).toEqual([usdString(balance), usdString(balance)]);
  });
});
