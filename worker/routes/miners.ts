import { and, eq, gte, lt, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { sha256Hex } from "../catalog/hash.ts";
import { invocations, miners } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { usdString } from "../billing/pricing.ts";
import { parseBody } from "../inference/normalize.ts";

const MINER_ID = /^[A-Za-z0-9._-]{1,128}$/;

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
    if (!MINER_ID.test(minerId)) {
      throw new ApiError("invalid_request", "Query parameter 'miner' must be a miner id.", "miner");
    }
    const session = c.env.MINER_SESSION.get(c.env.MINER_SESSION.idFromName(minerId));
    return session.fetch(c.req.raw);
  })
  /**
   * What a miner earned: its share of every settled invocation it served, per UTC day and in
   * total. Authenticated with the miner's own credential (`Authorization: Bearer <miner token>`).
   */
  .get("/:id/earnings", async (c) => {
    const minerId = c.req.param("id");
    const token = /^Bearer\s+(\S+)$/i.exec(c.req.header("authorization") ?? "")?.[1];
    const db = drizzle(c.env.DB);
    const miner = MINER_ID.test(minerId) && token
      ? await db.select({ tokenHash: miners.tokenHash }).from(miners).where(eq(miners.id, minerId)).get()
      : undefined;
    if (!miner || !token || miner.tokenHash !== (await sha256Hex(token))) {
      throw new ApiError("invalid_api_key", "Provide this miner's token as 'Authorization: Bearer <token>'.");
    }
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
