import { desc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { SCOPES, createAccount, createApiKey, revokeApiKey } from "../accounts/keys.ts";
import { audit } from "../admin/audit.ts";
import { adminAuth, type AdminEnv } from "../admin/auth.ts";
import { jsonBody } from "../http/json.ts";
import { CreateAccountBody, CreateKeyBody, CreditBody, SetPriceBody } from "../admin/schemas.ts";
import { applyCredit, ledgerOf } from "../billing/ledger.ts";
import { forgetChute } from "../catalog/index.ts";
import { usdString } from "../billing/pricing.ts";
import { accounts, apiKeys, chutes, credits } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { adminMinerRoutes } from "./admin-miners.ts";

/**
 * The operator API (`npm run admin`), behind an HS256 admin JWT. Amounts in are USD decimals,
 * parsed exactly; amounts out are integer nano-USD (`*_nano`) with a USD string beside them.
 */

async function requireAccount(db: D1Database, id: string): Promise<typeof accounts.$inferSelect> {
  const row = await drizzle(db).select().from(accounts).where(eq(accounts.id, id)).get();
  if (!row) throw new ApiError("not_found", `No account '${id}'.`, "account_id");
  return row;
}

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

export const adminRoutes = new Hono<AdminEnv>()
  .use(adminAuth())
  .route("/miners", adminMinerRoutes)

  .post("/accounts", async (c) => {
    const body = await jsonBody(c, CreateAccountBody);
    const account = await createAccount(c.env.DB, { name: body.name });
    const key = await createApiKey(c.env.DB, { accountId: account.id, name: "default", scopes: SCOPES });
    let balanceNano = 0;
    if (body.credit_usd !== undefined) {
      const credit = await applyCredit(c.env, {
        accountId: account.id,
        reference: `admin:initial:${account.id}`,
        amountNano: body.credit_usd,
        source: "admin",
      });
      balanceNano = credit.balanceNano;
    }
    audit(c, "account.create", { accountId: account.id, keyId: key.id, creditNano: body.credit_usd ?? 0 });
    return c.json(
      { account_id: account.id, name: account.name, api_key: key.key, key_id: key.id, scopes: key.scopes, balance_nano: balanceNano, balance_usd: usdString(balanceNano) },
      201,
    );
  })

  .post("/accounts/:id/credits", async (c) => {
    const accountId = c.req.param("id");
    const body = await jsonBody(c, CreditBody);
    await requireAccount(c.env.DB, accountId);
    const credit = { accountId, reference: `admin:${body.reference}`, amountNano: body.usd, source: "admin" } as const;
    // Idempotent by reference: a repeat is applied once; the same reference with another amount
    // is a 409 (from applyCredit).
    const result = await applyCredit(c.env, credit);
    const { applied } = result;
    audit(c, "account.credit", { accountId, reference: credit.reference, amountNano: body.usd, applied });
    return c.json({
      account_id: accountId,
      reference: credit.reference,
      amount_nano: body.usd,
      applied,
      balance_nano: result.balanceNano,
      balance_usd: usdString(result.balanceNano),
    });
  })

  .get("/accounts/:id", async (c) => {
    const account = await requireAccount(c.env.DB, c.req.param("id"));
    const db = drizzle(c.env.DB);
    const ledger = ledgerOf(c.env, account.id);
    const summary = await ledger.summary(account.id); // first: pulls credits the ledger has not seen
    const check = await ledger.audit();
    const keys = await db
      .select({ id: apiKeys.id, name: apiKeys.name, prefix: apiKeys.prefix, scopes: apiKeys.scopes, expiresAt: apiKeys.expiresAt, revokedAt: apiKeys.revokedAt, createdAt: apiKeys.createdAt })
      .from(apiKeys)
      .where(eq(apiKeys.accountId, account.id))
      .all();
    const recentCredits = await db.select().from(credits).where(eq(credits.accountId, account.id)).orderBy(desc(credits.createdAt)).limit(20).all();
    return c.json({
      account_id: account.id,
      name: account.name,
      created_at: seconds(account.createdAt),
      balance_nano: summary.balanceNano,
      held_nano: summary.heldNano,
      available_nano: summary.availableNano,
      balance_usd: usdString(summary.balanceNano),
      available_usd: usdString(summary.availableNano),
      holds: summary.holds,
      audit: {
        ok: check.ok,
        balance_nano: check.balanceNano,
        held_nano: check.heldNano,
        entries_balance_nano: check.entriesBalanceNano,
        entries_held_nano: check.entriesHeldNano,
        holds_sum_nano: check.holdsSumNano,
      },
      keys: keys.map((k) => ({
        key_id: k.id,
        name: k.name,
        prefix: k.prefix,
        scopes: JSON.parse(k.scopes) as unknown,
        expires_at: seconds(k.expiresAt),
        revoked_at: seconds(k.revokedAt),
        created_at: seconds(k.createdAt),
      })),
      recent_credits: recentCredits.map((r) => ({ reference: r.reference, amount_nano: r.amountNano, source: r.source, created_at: seconds(r.createdAt) })),
    });
  })

  .post("/keys", async (c) => {
    const body = await jsonBody(c, CreateKeyBody);
    await requireAccount(c.env.DB, body.account_id);
    const key = await createApiKey(c.env.DB, {
      accountId: body.account_id,
      name: body.name ?? "",
      scopes: body.scopes ?? ["invoke"],
      expiresAt: body.expires_at ?? null,
    });
    audit(c, "key.create", { accountId: body.account_id, keyId: key.id, scopes: key.scopes });
    return c.json(
      { key_id: key.id, api_key: key.key, account_id: body.account_id, name: key.name, prefix: key.prefix, scopes: key.scopes, expires_at: seconds(key.expiresAt) },
      201,
    );
  })

  .delete("/keys/:id", async (c) => {
    const keyId = c.req.param("id");
    // Effective at once in this isolate, within the key cache TTL (5 s) in the others.
    if (!(await revokeApiKey(c.env.DB, null, keyId))) throw new ApiError("not_found", `No API key '${keyId}'.`, "key_id");
    audit(c, "key.revoke", { keyId });
    return c.json({ key_id: keyId, revoked: true });
  })

  .patch("/chutes/:id/price", async (c) => {
    const chuteId = c.req.param("id");
    const body = await jsonBody(c, SetPriceBody);
    const db = drizzle(c.env.DB);
    const set: Partial<typeof chutes.$inferInsert> = {};
    if (body.prompt_usd_per_m !== undefined) set.promptPriceNanoPerM = body.prompt_usd_per_m;
    if (body.completion_usd_per_m !== undefined) set.completionPriceNanoPerM = body.completion_usd_per_m;
    if (body.cached_prompt_usd_per_m !== undefined) set.cachedPromptPriceNanoPerM = body.cached_prompt_usd_per_m;
    const row = await db.update(chutes).set(set).where(eq(chutes.id, chuteId)).returning().get();
    if (!row) throw new ApiError("not_found", `No chute with id '${chuteId}' (the id, e.g. chute-tiny-chat, not the model name).`, "chute_id");
    audit(c, "chute.price", { chuteId, ...set });
    // This isolate sees the new price at once; others when their chute cache expires (10 s).
    forgetChute(row.name);
    return c.json({
      chute_id: row.id,
      model: row.name,
      prompt_price_nano_per_m: row.promptPriceNanoPerM,
      completion_price_nano_per_m: row.completionPriceNanoPerM,
      cached_prompt_price_nano_per_m: row.cachedPromptPriceNanoPerM,
      prompt_usd_per_m: usdString(row.promptPriceNanoPerM),
      completion_usd_per_m: usdString(row.completionPriceNanoPerM),
      cached_prompt_usd_per_m: row.cachedPromptPriceNanoPerM === null ? null : usdString(row.cachedPromptPriceNanoPerM),
    });
  });
