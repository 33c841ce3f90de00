import { SignJWT, UnsecuredJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminCli } from "../support/processes.ts";
import { startGateway, TEST_SECRETS, type Gateway } from "../support/gateway.ts";

/** The operator API (/v1/admin) and its CLI (scripts/admin.ts), on the real Worker in workerd. */
let gw: Gateway;

beforeAll(async () => {
  gw = await startGateway();
});
afterAll(() => gw?.close());

const USD = 1_000_000_000;
const now = () => Math.floor(Date.now() / 1000);

interface TokenOptions {
  secret?: string;
  audience?: string;
  iat?: number;
  exp?: number;
}

function adminToken(opts: TokenOptions = {}): Promise<string> {
  const iat = opts.iat ?? now();
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("test-operator")
    .setAudience(opts.audience ?? "sluice-admin")
    .setIssuedAt(iat)
    .setExpirationTime(opts.exp ?? iat + 300)
    .sign(new TextEncoder().encode(opts.secret ?? TEST_SECRETS.ADMIN_JWT_SECRET));
}

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

async function admin(method: string, path: string, body?: unknown, token?: string | null): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token ?? (await adminToken())}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${gw.baseURL}/admin${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const errorOf = (r: Reply) => r.body.error as { message: string; type: string; param: string | null; code: string };

async function modelsWith(apiKey: string): Promise<number> {
  return (await fetch(`${gw.baseURL}/models`, { headers: { authorization: `Bearer ${apiKey}` } })).status;
}

describe("admin authentication", () => {
  it("refuses a missing token, a wrong secret, an expired token, a wrong audience, an unsigned token and an API key", async () => {
    const refused = async (token: string | null) => {
      const res = await admin("GET", `/accounts/${gw.seed.accountId}`, undefined, token);
      expect(res.status).toBe(401);
      expect(errorOf(res)).toMatchObject({ type: "authentication_error", code: "invalid_api_key" });
      return errorOf(res).message;
    };
    expect(await refused(null)).toMatch(/admin token is required/);
    expect(await refused(await adminToken({ secret: "another-secret-0123456789abcdef0123456789" }))).toMatch(/signature is invalid/);
    expect(await refused(await adminToken({ iat: now() - 900, exp: now() - 600 }))).toMatch(/expired/);
    expect(await refused(await adminToken({ audience: "someone-else" }))).toMatch(/"aud"/);
    expect(await refused(new UnsecuredJWT({}).setSubject("x").setAudience("sluice-admin").setIssuedAt().setExpirationTime("5m").encode())).toMatch(
      /HS256/,
    );
    expect(await refused(await adminToken({ exp: now() + 2 * 3600 }))).toMatch(/lifetime/);
    expect(await refused(gw.seed.apiKey)).toMatch(/malformed/);
    // ...and accepts a good one.
    expect((await admin("GET", `/accounts/${gw.seed.accountId}`)).status).toBe(200);
  });

  it("is off (503 not_configured), not open, when the secrets were never set; so is the payment webhook", async () => {
    const bare = await startGateway({ withoutSecrets: true });
    try {
      const res = await fetch(`${bare.baseURL}/admin/accounts/${bare.seed.accountId}`, { headers: { authorization: `Bearer ${await adminToken()}` } });
      expect(res.status).toBe(503);
      expect(((await res.json()) as Reply["body"]).error).toMatchObject({ code: "not_configured", type: "service_unavailable" });
      const hook = await fetch(`${bare.baseURL}/payments/webhook`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      expect(hook.status).toBe(503);
      expect(((await hook.json()) as Reply["body"]).error).toMatchObject({ code: "not_configured" });
    } finally {
      await bare.close();
    }
  });
});

describe("accounts", () => {
  it("creates an account with a working key and its initial credit", async () => {
    const res = await admin("POST", "/accounts", { name: "acme", credit_usd: "2.5" });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ name: "acme", balance_nano: 2.5 * USD, balance_usd: "2.5" });
    expect(res.body.api_key).toMatch(/^sk-sluice-/);
    expect(await modelsWith(res.body.api_key as string)).toBe(200);
    const shown = await admin("GET", `/accounts/${res.body.account_id as string}`);
    expect(shown.body).toMatchObject({ balance_nano: 2.5 * USD, available_nano: 2.5 * USD, audit: { ok: true } });
    expect(shown.body.keys).toEqual([expect.objectContaining({ key_id: res.body.key_id, revoked_at: null })]);
  });

  it("credits once per reference, and refuses the reference with another amount (409)", async () => {
    const { body: account } = await admin("POST", "/accounts", { name: "idem" });
    expect(account.balance_nano).toBe(0);
    const id = account.account_id as string;
    const first = await admin("POST", `/accounts/${id}/credits`, { usd: "1.25", reference: "invoice-42" });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ applied: true, balance_nano: 1.25 * USD, reference: "admin:invoice-42" });
    const again = await admin("POST", `/accounts/${id}/credits`, { usd: 1.25, reference: "invoice-42" });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ applied: false, balance_nano: 1.25 * USD });
    const conflict = await admin("POST", `/accounts/${id}/credits`, { usd: "3", reference: "invoice-42" });
    expect(conflict.status).toBe(409);
    expect(errorOf(conflict)).toMatchObject({ code: "conflict", param: "reference" });

    const shown = await admin("GET", `/accounts/${id}`);
    expect(shown.body).toMatchObject({ balance_nano: 1.25 * USD, held_nano: 0, audit: { ok: true, entries_balance_nano: 1.25 * USD } });
    const rows = await gw.db.prepare("SELECT amount_nano, source FROM credits WHERE account_id = ?").bind(id).all();
    expect(rows.results).toEqual([{ amount_nano: 1.25 * USD, source: "admin" }]);
  });

  it("404 for an unknown account, 400 with param for inexact or bad amounts", async () => {
    expect((await admin("GET", "/accounts/acct-nobody")).status).toBe(404);
    const unknown = await admin("POST", "/accounts/acct-nobody/credits", { usd: "1", reference: "x" });
    expect(unknown.status).toBe(404);
    expect(errorOf(unknown).code).toBe("not_found");
    for (const usd of ["1.2.3", "-1", "0", 0.1 + 0.2, "0.0000000001"]) {
      const bad = await admin("POST", `/accounts/${gw.seed.accountId}/credits`, { usd, reference: "bad" });
      expect(bad.status, String(usd)).toBe(400);
      expect(errorOf(bad).param).toBe("usd");
    }
    const typo = await admin("POST", "/accounts", { name: "x", credit: "1" });
    expect(typo.status).toBe(400);
    expect(errorOf(typo).message).toMatch(/credit/);
  });
});

describe("keys and prices", () => {
  it("creates a key with chosen scopes and revokes it", async () => {
    const created = await admin("POST", "/keys", { account_id: gw.seed.accountId, name: "ci", scopes: ["invoke"] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ account_id: gw.seed.accountId, name: "ci", scopes: ["invoke"], expires_at: null });
    const key = created.body.api_key as string;
    expect(await modelsWith(key)).toBe(200);
    const revoked = await admin("DELETE", `/keys/${created.body.key_id as string}`);
    expect(revoked).toMatchObject({ status: 200, body: { revoked: true } });
    expect(await modelsWith(key)).toBe(401);
    expect((await admin("DELETE", "/keys/key-nobody")).status).toBe(404);
    expect((await admin("POST", "/keys", { account_id: "acct-nobody" })).status).toBe(404);
    expect(errorOf(await admin("POST", "/keys", { account_id: gw.seed.accountId, scopes: ["root"] })).param).toBe("scopes[0]");
  });

  it("sets a chute's prices from exact USD per million tokens", async () => {
    const res = await admin("PATCH", "/chutes/chute-tiny-chat/price", { prompt_usd_per_m: "0.15", completion_usd_per_m: "0.000000001", cached_prompt_usd_per_m: null });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ prompt_price_nano_per_m: 150_000_000, completion_price_nano_per_m: 1, prompt_usd_per_m: "0.15" });
    const row = await gw.db.prepare("SELECT prompt_price_nano_per_m AS p, completion_price_nano_per_m AS c, cached_prompt_price_nano_per_m AS k FROM chutes WHERE id = 'chute-tiny-chat'").first();
    expect(row).toEqual({ p: 150_000_000, c: 1, k: null });
    expect((await admin("PATCH", "/chutes/chute-nobody/price", { prompt_usd_per_m: "1" })).status).toBe(404);
    expect((await admin("PATCH", "/chutes/chute-tiny-chat/price", {})).status).toBe(400);
  });
});

/** Run `scripts/admin.ts` as an operator would, against the test gateway. */
const cli = (args: string[]) => adminCli(gw.url, args);

describe("the admin CLI", () => {
  it("creates an account with credit, credits it, shows it, and reports API errors with exit 1", async () => {
    const created = await cli(["accounts", "create", "--name", "from-cli", "--credit-usd", "3"]);
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    const account = JSON.parse(created.stdout) as { account_id: string; api_key: string; balance_nano: number };
    expect(account.balance_nano).toBe(3 * USD);
    expect(await modelsWith(account.api_key)).toBe(200);

    const credit = await cli(["accounts", "credit", "--account", account.account_id, "--usd", "0.5", "--reference", "cli-1"]);
    expect(credit.code).toBe(0);
    expect(JSON.parse(credit.stdout)).toMatchObject({ applied: true, balance_nano: 3.5 * USD });
    const shown = await cli(["accounts", "show", "--account", account.account_id]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ balance_usd: "3.5", audit: { ok: true } });

    const conflict = await cli(["accounts", "credit", "--account", account.account_id, "--usd", "9", "--reference", "cli-1"]);
    expect(conflict.code).toBe(1);
    expect(conflict.stdout).toBe("");
    expect(conflict.stderr).toMatch(/^error: Reference 'admin:cli-1' was already used .*\(HTTP 409, code conflict, param reference\)/);

    const usage = await cli(["accounts", "credit", "--account", account.account_id]);
    expect(usage.code).toBe(1);
    expect(usage.stderr).toMatch(/needs --usd, --reference/);
  });
});
