import { and, asc, eq, sql, type SQL } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { Gpu, isHotkey } from "../../protocol/index.ts";
import { audit } from "../admin/audit.ts";
import type { AdminEnv } from "../admin/auth.ts";
import { AddMinerBody, BanBody, ImportQuery, ListMinersQuery } from "../admin/miner-schemas.ts";
import { miners } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { jsonBody, readJson } from "../http/json.ts";
import { parseBody } from "../http/json.ts";
import { log } from "../log.ts";
import { MetagraphSnapshot, hotkeysOf, importSnapshot } from "../miners/metagraph.ts";

/**
 * The miner registry, for the operator (`/v1/admin/miners`, behind the admin JWT of the parent
 * router): who may connect. Miners are added by hand or imported from a metagraph snapshot;
 * a ban takes effect at once (the connected agent is disconnected) and survives imports.
 */

type MinerRow = typeof miners.$inferSelect;

const seconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));
const Gpus = z.array(Gpu).catch([]);

function gpusOf(json: string): z.infer<typeof Gpus> {
  try {
    return Gpus.parse(JSON.parse(json));
  } catch {
    return [];
  }
}

function minerView(row: MinerRow) {
  return {
    object: "miner",
    hotkey: row.id,
    name: row.name,
    coldkey: row.coldkey,
    uid: row.uid,
    source: row.source,
    status: row.status,
    connected: row.sessionId !== null,
    last_seen_at: seconds(row.lastSeenAt),
    gpus: gpusOf(row.gpus),
    accepts_offers: row.acceptsOffers,
    created_at: seconds(row.createdAt),
  };
}

function hotkeyParam(value: string): string {
  if (!isHotkey(value)) throw new ApiError("invalid_request", `'${value}' is not a miner hotkey (an SS58 address, prefix 42).`, "hotkey");
  return value;
}

async function requireMiner(db: D1Database, hotkey: string): Promise<MinerRow> {
  const row = await drizzle(db).select().from(miners).where(eq(miners.id, hotkey)).get();
  if (!row) throw new ApiError("not_found", `No miner with hotkey '${hotkey}' in the registry.`, "hotkey");
  return row;
}

/** Close the miner's agent connection, if any. False when the session could not be reached (logged). */
async function evict(env: Env, hotkey: string, reason: "banned" | "deregistered"): Promise<boolean> {
  try {
    await env.MINER_SESSION.get(env.MINER_SESSION.idFromName(hotkey)).evict(reason);
    return true;
  } catch (err) {
    log.error("admin.evict_failed", { component: "admin", minerId: hotkey, reason, error: String(err) });
    return false;
  }
}

export const adminMinerRoutes = new Hono<AdminEnv>()
  .get("/", async (c) => {
    const q = parseBody(ListMinersQuery, c.req.query());
    const where: SQL[] = [];
    if (q.status) where.push(eq(miners.status, q.status));
    if (q.source) where.push(eq(miners.source, q.source));
    const rows = await drizzle(c.env.DB)
      .select()
      .from(miners)
      .where(and(...where))
      .orderBy(asc(miners.createdAt), asc(miners.id))
      .all();
    return c.json({ object: "list", data: rows.map(minerView) });
  })

  /**
   * Register a hotkey. Idempotent: an active miner stays as it is (its name and coldkey updated
   * when given; an imported one stays managed by imports), a banned one stays banned until
   * unbanned, and a deregistered one becomes the operator's (active, untouched by imports).
   */
  .post("/", async (c) => {
    const body = await jsonBody(c, AddMinerBody);
    const db = drizzle(c.env.DB);
    const existed = await db.select({ id: miners.id }).from(miners).where(eq(miners.id, body.hotkey)).get();
    const given = { ...(body.name !== undefined ? { name: body.name } : {}), ...(body.coldkey !== undefined ? { coldkey: body.coldkey } : {}) };
    const row = await db
      .insert(miners)
      .values({ id: body.hotkey, ...given, source: "admin", status: "active" })
      .onConflictDoUpdate({
        target: miners.id,
        set: {
          ...given,
          source: sql`case when ${miners.status} = 'deregistered' then 'admin' else ${miners.source} end`,
          status: sql`case when ${miners.status} = 'deregistered' then 'active' else ${miners.status} end`,
        },
      })
      .returning()
      .get();
    audit(c, "miner.add", { minerId: body.hotkey, created: !existed, status: row.status, source: row.source });
    return c.json({ ...minerView(row), created: !existed }, existed ? 200 : 201);
  })

  /** Ban a registered miner: refused from now on, its connected agent disconnected at once. */
  .post("/:hotkey/ban", async (c) => {
    const hotkey = hotkeyParam(c.req.param("hotkey"));
    const body = parseBody(BanBody, await readJson(c, { emptyBody: {} }));
    const row = await drizzle(c.env.DB).update(miners).set({ status: "banned" }).where(eq(miners.id, hotkey)).returning().get();
    if (!row) throw new ApiError("not_found", `No miner with hotkey '${hotkey}' in the registry.`, "hotkey");
    const disconnected = await evict(c.env, hotkey, "banned");
    audit(c, "miner.ban", { minerId: hotkey, reason: body.reason ?? null, wasConnected: row.sessionId !== null, disconnected });
    return c.json({ ...minerView({ ...row, sessionId: disconnected ? null : row.sessionId }), reason: body.reason ?? null });
  })

  /**
   * Lift a ban. An imported miner that left the metagraph while banned comes back deregistered,
   * not active (its uid was cleared when it left); any other becomes active. Idempotent.
   */
  .post("/:hotkey/unban", async (c) => {
    const hotkey = hotkeyParam(c.req.param("hotkey"));
    const current = await requireMiner(c.env.DB, hotkey);
    if (current.status !== "banned") return c.json({ ...minerView(current), changed: false });
    const status = current.source === "metagraph" && current.uid === null ? "deregistered" : "active";
    const row =
      (await drizzle(c.env.DB)
        .update(miners)
        .set({ status })
        .where(and(eq(miners.id, hotkey), eq(miners.status, "banned")))
        .returning()
        .get()) ?? (await requireMiner(c.env.DB, hotkey));
    audit(c, "miner.unban", { minerId: hotkey, status: row.status });
    return c.json({ ...minerView(row), changed: true });
  })

  /**
   * Import a metagraph snapshot (the body; format in worker/miners/metagraph.ts): neurons are
   * registered or updated, imported miners absent from it are deregistered and disconnected,
   * bans and operator-added miners are kept. `?dry_run=true` reports without changing anything.
   */
  .post("/import", async (c) => {
    const { dry_run: dryRun = false } = parseBody(ImportQuery, c.req.query());
    const snapshot = await jsonBody(c, MetagraphSnapshot);
    const plan = await importSnapshot(c.env.DB, snapshot, { dryRun });
    const deregistered = hotkeysOf(plan, "deregister");
    if (!dryRun) await Promise.all(deregistered.map((hotkey) => evict(c.env, hotkey, "deregistered")));
    audit(c, "miners.import", { netuid: snapshot.netuid, block: snapshot.block, neurons: snapshot.neurons.length, dryRun, ...plan.summary });
    return c.json({
      object: "metagraph.import",
      netuid: snapshot.netuid,
      block: snapshot.block,
      network: snapshot.network ?? null,
      neurons: snapshot.neurons.length,
      dry_run: dryRun,
      ...plan.summary,
      hotkeys: { added: hotkeysOf(plan, "add"), updated: hotkeysOf(plan, "update"), deregistered },
    });
  });
