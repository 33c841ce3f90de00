import { and, asc, count, eq, gte, lt, sql, sum, type SQL } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { ledgerOf } from "../billing/ledger.ts";
import { usdString } from "../billing/pricing.ts";
import { accounts, chutes, invocations } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { parseBody } from "../http/json.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

/**
 * The caller's own account: its balance (from its AccountLedger) and its usage (from D1
 * `invocations`). Every query is keyed by the calling key's account, so no other account's data
 * can be named. Mounted at `/v1`, so auth is per route, not `use()`d over every `/v1` request.
 */

const DAY_MS = 86_400_000;
const DEFAULT_USAGE_DAYS = 30;

const Bound = z.union([z.iso.date(), z.iso.datetime({ offset: true })], {
  error: "expected an ISO date (2026-01-31) or an ISO timestamp with a zone (2026-01-31T12:00:00Z)",
});

const UsageQuery = z.object({
  from: Bound.optional(),
  to: Bound.optional(),
  group_by: z.enum(["day", "model"]).default("day"),
});

const isDate = (s: string) => s.length === 10;

/** The start of the range, inclusive, in epoch ms: a date means 00:00 UTC of that day. */
function fromMs(s: string): number {
  return isDate(s) ? Date.parse(`${s}T00:00:00Z`) : Date.parse(s);
}

/** The end of the range, exclusive, in epoch ms: a date includes the whole UTC day. */
function toExclusiveMs(s: string): number {
  return isDate(s) ? Date.parse(`${s}T00:00:00Z`) + DAY_MS : Date.parse(s) + 1;
}

function usageRange(q: z.infer<typeof UsageQuery>, now: number): { from: number; to: number } {
  const to = q.to === undefined ? now + 1 : toExclusiveMs(q.to);
  const from = q.from === undefined ? to - DEFAULT_USAGE_DAYS * DAY_MS : fromMs(q.from);
  for (const [param, ms] of [["from", from], ["to", to]] as const) {
    // The formats are checked by zod; this catches what parses as a format but not as a time.
    if (!Number.isFinite(ms)) throw new ApiError("invalid_request", `Invalid parameter '${param}': not a valid time.`, param);
  }
  if (to <= from) throw new ApiError("invalid_request", "Invalid parameter 'to': it must not be before 'from'.", "to");
  return { from, to };
}

/** One row per group of the caller's invocations in [from, to). */
async function usageRows(db: D1Database, accountId: string, group: SQL<string>, from: number, to: number) {
  return drizzle(db)
    .select({
      key: group,
      requests: count(),
      promptTokens: sum(invocations.promptTokens).mapWith(Number),
      completionTokens: sum(invocations.completionTokens).mapWith(Number),
      costNano: sum(invocations.costNano).mapWith(Number),
    })
    .from(invocations)
    .leftJoin(chutes, eq(chutes.id, invocations.chuteId))
    .where(and(eq(invocations.accountId, accountId), gte(invocations.createdAt, from), lt(invocations.createdAt, to)))
    .groupBy(group)
    .orderBy(asc(group))
    .all();
}

const GROUPS = {
  day: sql<string>`strftime('%Y-%m-%d', ${invocations.createdAt} / 1000, 'unixepoch')`,
  // A chute deleted since keeps its invocations, under its id.
  model: sql<string>`coalesce(${chutes.name}, ${invocations.chuteId})`,
} as const satisfies Record<z.infer<typeof UsageQuery>["group_by"], SQL<string>>;

const usageAuth = apiKeyAuth({ scope: "usage:read" });

export const accountRoutes = new Hono<AppEnv>()
  .get("/account", usageAuth, async (c) => {
    const { accountId } = c.get("apiKey");
    const [account, summary] = await Promise.all([
      drizzle(c.env.DB).select({ id: accounts.id, name: accounts.name }).from(accounts).where(eq(accounts.id, accountId)).get(),
      ledgerOf(c.env, accountId).summary(accountId),
    ]);
    if (!account) throw new ApiError("not_found", "This API key's account no longer exists.");
    return c.json({
      object: "account",
      id: account.id,
      name: account.name,
      balance_nano: summary.balanceNano,
      held_nano: summary.heldNano,
      available_nano: summary.availableNano,
      holds_in_flight: summary.holds,
      balance_usd: usdString(summary.balanceNano),
      available_usd: usdString(summary.availableNano),
    });
  })
  .get("/usage", usageAuth, async (c) => {
    const q = parseBody(UsageQuery, c.req.query());
    const { from, to } = usageRange(q, Date.now());
    const rows = await usageRows(c.env.DB, c.get("apiKey").accountId, GROUPS[q.group_by], from, to);
    return c.json({
      object: "list",
      group_by: q.group_by,
      from: new Date(from).toISOString(),
      // Inclusive, like the range asked for.
      to: new Date(to - 1).toISOString(),
      data: rows.map((r) => ({
        [q.group_by]: r.key,
        requests: r.requests,
        prompt_tokens: r.promptTokens,
        completion_tokens: r.completionTokens,
        cost_nano: r.costNano,
        cost_usd: usdString(r.costNano),
      })),
    });
  });
