import { and, eq, gte, lt, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { isHotkey } from "../../protocol/index.ts";
import { invocations } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { usdString } from "../billing/pricing.ts";
import { parseBody } from "../http/json.ts";
import { minerSignature } from "../middleware/miner-signature/index.ts";

const EarningsQuery = z.object({
  from: z.iso.date().optional(),
  to: z.iso.date().optional(),
});

export const minerRoutes = new Hono<AppEnv>()
  /** Where miner agents connect: a WebSocket upgrade handed to the miner's session object. */
  .get("/connect", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      return c.json(
        { error: { message: "Expected a WebSocket upgrade.", type: "invalid_request_error", param: null, code: "upgrade_required" } },
        426,
      );
    }
    const minerId = c.req.query("miner") ?? "";
    if (!isHotkey(minerId)) {
      throw new ApiError("invalid_request", "Query parameter 'miner' must be the miner's hotkey (an SS58 address).", "miner");
    }
    const session = c.env.MINER_SESSION.get(c.env.MINER_SESSION.idFromName(minerId));
    return session.fetch(c.req.raw);
  })
  /**
   * What a miner earned: its share of every settled invocation it served, per UTC day and in
   * total. Signed with the miner's hotkey (see the miner-signature middleware). Banned and
   * deregistered miners may still read it: it is the record of work already done, which a
   * miner needs to reconcile or dispute; a hotkey the registry never knew is refused.
   */
  .get("/:id/earnings", minerSignature({ purpose: "earnings", statuses: ["active", "banned", "deregistered"] }), async (c) => {
    const minerId = c.var.miner.hotkey;
    const db = drizzle(c.env.DB);
    const q = parseBody(EarningsQuery, c.req.query());
    const from = q.from ? Date.parse(`${q.from}T00:00:00Z`) : 0;
    const to = q.to ? Date.parse(`${q.to}T00:00:00Z`) + 86_400_000 : Number.MAX_SAFE_INTEGER;
    const day = sql<string>`strftime('%Y-%m-%d', ${invocations.createdAt} / 1000, 'unixepoch')`;
    const rows = await db
      .select({
        day,
        invocations: sql<number>`count(*)`,
        promptTokens: sql<number>`coalesce(sum(${invocations.promptTokens}), 0)`,
        completionTokens: sql<number>`coalesce(sum(${invocations.completionTokens}), 0)`,
        chargedNano: sql<number>`coalesce(sum(${invocations.costNano}), 0)`,
        earningsNano: sql<number>`coalesce(sum(${invocations.minerEarningsNano}), 0)`,
      })
      .from(invocations)
      .where(and(eq(invocations.minerId, minerId), gte(invocations.createdAt, from), lt(invocations.createdAt, to)))
      .groupBy(day)
      .orderBy(day)
      .all();
    const total = rows.reduce(
      (t, r) => ({
        invocations: t.invocations + r.invocations,
        promptTokens: t.promptTokens + r.promptTokens,
        completionTokens: t.completionTokens + r.completionTokens,
        chargedNano: t.chargedNano + r.chargedNano,
        earningsNano: t.earningsNano + r.earningsNano,
      }),
      { invocations: 0, promptTokens: 0, completionTokens: 0, chargedNano: 0, earningsNano: 0 },
    );
    const shape = (r: typeof total) => ({
      invocations: r.invocations,
      prompt_tokens: r.promptTokens,
      completion_tokens: r.completionTokens,
      charged_nano: r.chargedNano,
      earnings_nano: r.earningsNano,
      earnings_usd: usdString(r.earningsNano),
    });
    return c.json({
      object: "miner.earnings",
      miner_id: minerId,
      ...shape(total),
      days: rows.map((r) => ({ day: r.day, ...shape(r) })),
    });
  });
