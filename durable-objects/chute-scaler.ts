import { DurableObject } from "cloudflare:workers";
import { and, eq, isNotNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { z } from "zod";
import { Gpu, pickGpus, type DeploySpec } from "../protocol/index.ts";
import { chutes, miners } from "../worker/db/schema.ts";
import { numberVar } from "../worker/env.ts";
import { log } from "../worker/log.ts";
import { stubByName } from "../worker/runtime/object-ids.ts";
import { MetaTable } from "./meta-table.ts";
import type { RouterSnapshot } from "./router-types.ts";
import type { ScalerState } from "./scaler-types.ts";
import { DEFAULT_POLICY, decide, type Decision, type LoadSample, type PolicyConfig } from "./scaling-policy.ts";

export type { ScalerState };

/**
 * One per chute: the autoscaler. While the chute has instances, launches in progress, a
 * minimum, or recent demand, an alarm samples the chute's router (in-flight, capacity, refused
 * requests), asks the policy (scaling-policy.ts) for a target instance count, and acts: deploy
 * offers to connected miners whose GPUs fit, or undeploying idle instances it launched. Woken by
 * the router when it refuses requests or an instance registers, and by the chutes API.
 */

const SCHEMA_VERSION = 2;
/** Offers sent per tick at most (each waits for the agent's answer). */
const MAX_OFFERS_PER_TICK = 4;
/** A miner whose launch of this chute failed is not asked again for a while (doubling). */
const FAILED_LAUNCH_BACKOFF_MS = 30_000;
const FAILED_LAUNCH_BACKOFF_MAX_MS = 30 * 60_000;

interface PendingRow extends Record<string, SqlStorageValue> {
  offer_id: string;
  miner_id: string;
  instance_id: string;
  since: number;
}

type ChuteRow = typeof chutes.$inferSelect;

export class ChuteScaler extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly meta: MetaTable;
  private last: Decision | null = null;
  /** Whether the last scale-up found no miner (logged once per run of such ticks). */
  private starved = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.meta = new MetaTable(this.sql);
    void ctx.blockConcurrencyWhile(async () => this.migrate());
  }

  private migrate(): void {
    const version = this.meta.number("schema");
    if (version !== null && version >= SCHEMA_VERSION) return;
    this.sql.exec("CREATE TABLE IF NOT EXISTS failures (miner_id TEXT PRIMARY KEY, count INTEGER NOT NULL, until INTEGER NOT NULL)");
    this.sql.exec(`CREATE TABLE IF NOT EXISTS samples (
      t INTEGER NOT NULL, inflight INTEGER NOT NULL, capacity INTEGER NOT NULL, instances INTEGER NOT NULL,
      requests INTEGER NOT NULL, refused INTEGER NOT NULL)`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS pending (
      offer_id TEXT PRIMARY KEY, miner_id TEXT NOT NULL, instance_id TEXT NOT NULL, since INTEGER NOT NULL)`);
    this.meta.set("schema", SCHEMA_VERSION);
  }

  /** Look at the chute now (and keep looking while there is anything to manage). */
  async poke(chuteId: string): Promise<void> {
    if (this.meta.get("retired") === 1) return;
    this.meta.set("chute", chuteId);
    const armed = await this.ctx.storage.getAlarm();
    const soon = Date.now() + 200;
    if (armed === null || armed > soon) await this.ctx.storage.setAlarm(soon);
  }

  /**
   * A launch ended on the agent: up (its instance is announced; it may even have died since)
   * or failed. Either way it no longer counts as pending; a failure rests the miner for a while.
   */
  deployEnded(offerId: string, ready: boolean, message: string): void {
    const row = this.sql.exec<PendingRow>("SELECT * FROM pending WHERE offer_id = ?", offerId).toArray()[0];
    if (!row) return;
    this.sql.exec("DELETE FROM pending WHERE offer_id = ?", offerId);
    if (ready) {
      this.sql.exec("DELETE FROM failures WHERE miner_id = ?", row.miner_id);
      log.info("scaler.deployed", { component: "ChuteScaler", offerId, instanceId: row.instance_id, minerId: row.miner_id, launchMs: Date.now() - row.since });
      return;
    }
    const count = (this.sql.exec<{ count: number }>("SELECT count FROM failures WHERE miner_id = ?", row.miner_id).toArray()[0]?.count ?? 0) + 1;
    const backoff = Math.min(FAILED_LAUNCH_BACKOFF_MAX_MS, FAILED_LAUNCH_BACKOFF_MS * 2 ** (count - 1));
    this.sql.exec("INSERT OR REPLACE INTO failures (miner_id, count, until) VALUES (?, ?, ?)", row.miner_id, count, Date.now() + backoff);
    log.warn("scaler.deploy_failed", { component: "ChuteScaler", chuteId: this.meta.get("chute"), offerId, minerId: row.miner_id, message, retryAfterMs: backoff });
  }

  state(): ScalerState {
    return {
      target: this.last?.target ?? 0,
      reason: this.last?.reason ?? "not evaluated yet",
      pending: this.sql
        .exec<PendingRow>("SELECT * FROM pending ORDER BY since")
        .toArray()
        .map((p) => ({ offerId: p.offer_id, minerId: p.miner_id, instanceId: p.instance_id, since: p.since })),
      utilization: { short: this.last?.short.utilization ?? null, long: this.last?.long.utilization ?? null },
      refusedShare: this.last?.short.refusedShare ?? 0,
      lastScaleUpAt: this.meta.number("last_up_at"),
      lastScaleDownAt: this.meta.number("last_down_at"),
    };
  }

  /**
   * The chute was deleted: drain every instance (managed or configured) and stop scaling.
   * Returns how many instances were asked to drain.
   */
  async retire(chuteId: string, reason: string): Promise<number> {
    this.meta.set("chute", chuteId);
    this.meta.set("retired", 1);
    await this.ctx.storage.deleteAlarm();
    const snap = await this.router(chuteId).snapshot();
    let asked = 0;
    for (const inst of snap.instances) {
      if (await this.session(inst.minerId).undeploy(inst.instanceId, reason)) asked++;
    }
    for (const p of this.sql.exec<PendingRow>("SELECT * FROM pending").toArray()) {
      if (await this.session(p.miner_id).undeploy(p.instance_id, reason)) asked++;
    }
    this.sql.exec("DELETE FROM pending");
    log.info("scaler.retired", { component: "ChuteScaler", chuteId, instances: asked });
    return asked;
  }

  override async alarm(): Promise<void> {
    const chuteId = this.meta.get("chute");
    if (typeof chuteId !== "string" || this.meta.get("retired") === 1) return;
    try {
      const keepGoing = await this.tick(chuteId);
      if (keepGoing) await this.ctx.storage.setAlarm(Date.now() + numberVar(this.env.SCALER_TICK_MS, 5_000));
    } catch (err) {
      log.error("scaler.tick_failed", { component: "ChuteScaler", chuteId, error: String(err) });
      await this.ctx.storage.setAlarm(Date.now() + numberVar(this.env.SCALER_TICK_MS, 5_000));
    }
  }

  private config(): PolicyConfig {
    return {
      ...DEFAULT_POLICY,
      shortWindowMs: numberVar(this.env.SCALER_SHORT_WINDOW_MS, 30_000),
      longWindowMs: numberVar(this.env.SCALER_LONG_WINDOW_MS, 300_000),
      cooldownMs: numberVar(this.env.SCALER_COOLDOWN_MS, 120_000),
    };
  }

  /** One look at the chute; true while there is reason to look again. */
  private async tick(chuteId: string): Promise<boolean> {
    const chute = await drizzle(this.env.DB).select().from(chutes).where(eq(chutes.id, chuteId)).get();
    if (!chute || chute.deletedAt !== null) return false;
    const cfg = this.config();
    const now = Date.now();
    const snap = await this.router(chuteId).snapshot();
    this.record(now, snap, cfg.longWindowMs);
    await this.reconcilePending(now, snap);
    const pending = this.sql.exec<PendingRow>("SELECT * FROM pending").toArray();
    const samples = this.sql.exec<LoadSample & Record<string, SqlStorageValue>>("SELECT * FROM samples ORDER BY t").toArray();
    const lastUp = this.meta.number("last_up_at");
    const lastDown = this.meta.number("last_down_at");
    const decision = decide(
      {
        now,
        samples,
        current: snap.instances.length,
        pending: pending.length,
        min: chute.minInstances,
        max: chute.maxInstances,
        perInstance: chute.concurrency,
        lastScaleAt: Math.max(lastUp ?? 0, lastDown ?? 0) || null,
      },
      cfg,
    );
    if (decision.target !== this.last?.target || decision.reason !== this.last.reason) {
      log.info("scaler.decision", { component: "ChuteScaler", chuteId, current: snap.instances.length, pending: pending.length, target: decision.target, reason: decision.reason });
    }
    this.last = decision;
    const have = snap.instances.length + pending.length;
    if (decision.target > have) await this.scaleUp(chute, snap, decision.target - have);
    else if (decision.target < snap.instances.length && pending.length === 0) await this.scaleDown(chute, snap);
    const recent = decision.long.requests > 0;
    // (Pending counted after this tick's offers.)
    return snap.instances.length > 0 || chute.minInstances > 0 || recent || this.countPending() > 0;
  }

  private countPending(): number {
    return this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM pending").one().n;
  }

  /** Add a sample (request counts as deltas of the router's monotonic counters) and drop old ones. */
  private record(now: number, snap: RouterSnapshot, keepMs: number): void {
    const prevRequests = this.meta.number("router_requests") ?? 0;
    const prevRefused = this.meta.number("router_refused") ?? 0;
    // A restarted router counts from zero again.
    const requests = snap.stats.requests >= prevRequests ? snap.stats.requests - prevRequests : snap.stats.requests;
    const refused = snap.stats.refused >= prevRefused ? snap.stats.refused - prevRefused : snap.stats.refused;
    this.meta.set("router_requests", snap.stats.requests);
    this.meta.set("router_refused", snap.stats.refused);
    const inflight = snap.instances.reduce((n, i) => n + i.inflight, 0);
    const capacity = snap.instances.reduce((n, i) => n + i.maxConcurrency, 0);
    this.sql.exec(
      "INSERT INTO samples (t, inflight, capacity, instances, requests, refused) VALUES (?, ?, ?, ?, ?, ?)",
      now,
      inflight,
      capacity,
      snap.instances.length,
      requests,
      refused,
    );
    this.sql.exec("DELETE FROM samples WHERE t <= ?", now - keepMs);
  }

  /**
   * Launches whose instance has registered are done; those whose miner went away, or that never
   * came up, are given up on (so they stop counting as capacity on the way).
   */
  private async reconcilePending(now: number, snap: RouterSnapshot): Promise<void> {
    const live = new Set(snap.instances.map((i) => i.instanceId));
    const timeout = numberVar(this.env.DEPLOY_TIMEOUT_MS, 900_000);
    for (const p of this.sql.exec<PendingRow>("SELECT * FROM pending").toArray()) {
      if (live.has(p.instance_id)) {
        this.sql.exec("DELETE FROM pending WHERE offer_id = ?", p.offer_id);
        this.sql.exec("DELETE FROM failures WHERE miner_id = ?", p.miner_id);
        log.info("scaler.deployed", { component: "ChuteScaler", offerId: p.offer_id, instanceId: p.instance_id, minerId: p.miner_id, launchMs: now - p.since });
      } else if (!(await this.session(p.miner_id).info()).connected) {
        this.sql.exec("DELETE FROM pending WHERE offer_id = ?", p.offer_id);
        log.warn("scaler.deploy_lost", { component: "ChuteScaler", offerId: p.offer_id, minerId: p.miner_id, reason: "the miner disconnected during the launch" });
      } else if (now - p.since > timeout) {
        this.sql.exec("DELETE FROM pending WHERE offer_id = ?", p.offer_id);
        log.warn("scaler.deploy_timeout", { component: "ChuteScaler", offerId: p.offer_id, minerId: p.miner_id });
        this.ctx.waitUntil(this.session(p.miner_id).undeploy(p.instance_id, "the launch took too long").then(() => undefined));
      }
    }
  }

  /**
   * Offer new instances to connected miners that take offers for this engine and have enough
   * GPUs of the right kind (the agent checks which are free, and may decline). Miners not yet
   * serving the chute are asked first, to spread it.
   */
  private async scaleUp(chute: ChuteRow, snap: RouterSnapshot, wanted: number): Promise<void> {
    const rows = await drizzle(this.env.DB)
      .select({ id: miners.id, gpus: miners.gpus })
      .from(miners)
      .where(and(eq(miners.status, "active"), eq(miners.acceptsOffers, true), isNotNull(miners.sessionId)));
    const spec = deploySpec(chute);
    const serving = new Map<string, number>();
    for (const i of snap.instances) serving.set(i.minerId, (serving.get(i.minerId) ?? 0) + 1);
    const resting = new Set(
      this.sql.exec<{ miner_id: string }>("SELECT miner_id FROM failures WHERE until > ?", Date.now()).toArray().map((r) => r.miner_id),
    );
    const candidates = rows
      .filter((m) => !resting.has(m.id) && pickGpus(spec.gpu, parseGpus(m.gpus), new Set()) !== null)
      .map((m) => ({ id: m.id, order: (serving.get(m.id) ?? 0) + Math.random() }))
      .sort((a, b) => a.order - b.order);
    let placed = 0;
    let offers = 0;
    for (const m of candidates) {
      if (placed >= wanted || offers >= MAX_OFFERS_PER_TICK) break;
      const offerId = crypto.randomUUID();
      offers++;
      const reply = await this.session(m.id).offer(offerId, chute.id, spec);
      if (reply.status !== "accepted") {
        log.info("scaler.offer_declined", { component: "ChuteScaler", chuteId: chute.id, minerId: m.id, status: reply.status, message: reply.message });
        continue;
      }
      this.sql.exec("INSERT INTO pending (offer_id, miner_id, instance_id, since) VALUES (?, ?, ?, ?)", offerId, m.id, reply.instanceId, Date.now());
      placed++;
      log.info("scaler.offer_accepted", { component: "ChuteScaler", chuteId: chute.id, minerId: m.id, offerId, instanceId: reply.instanceId });
    }
    if (placed > 0) this.meta.set("last_up_at", Date.now());
    else if (!this.starved) log.warn("scaler.no_miner", { component: "ChuteScaler", chuteId: chute.id, wanted, candidates: candidates.length, resting: resting.size });
    this.starved = placed === 0;
  }

  /** Undeploy one idle instance this scaler's offers launched (configured instances stay). */
  private async scaleDown(chute: ChuteRow, snap: RouterSnapshot): Promise<void> {
    const idle = snap.instances.filter((i) => i.managed && i.inflight === 0).sort((a, b) => a.health.served - b.health.served);
    const victim = idle[0];
    if (!victim) return;
    const asked = await this.session(victim.minerId).undeploy(victim.instanceId, "scaled down: idle");
    // Stop routing to it now; the agent drains what it has and re-announces without it.
    await this.router(chute.id).unregisterInstance(victim.instanceId, victim.minerId);
    this.meta.set("last_down_at", Date.now());
    log.info("scaler.undeploy", { component: "ChuteScaler", chuteId: chute.id, instanceId: victim.instanceId, minerId: victim.minerId, asked });
  }

  private router(chuteId: string) {
    return stubByName(this.env.CHUTE_ROUTER, chuteId);
  }

  private session(minerId: string) {
    return stubByName(this.env.MINER_SESSION, minerId);
  }
}

/** What an agent needs to launch an instance of the chute. */
export function deploySpec(chute: ChuteRow): DeploySpec {
  return {
    chute: chute.name,
    modelRef: chute.modelRef,
    engine: chute.engine,
    contextLength: chute.contextLength,
    concurrency: chute.concurrency,
    gpu: { count: chute.gpuCount, minVramMb: chute.minVramMb, types: parseTypes(chute.gpuTypes) },
  };
}

/** A JSON column holding an array; [] when it is not valid (the scaler must not stop on a bad row). */
function jsonArray<T>(schema: z.ZodType<T>, json: string): T[] {
  try {
    const r = z.array(schema).safeParse(JSON.parse(json));
    return r.success ? r.data : [];
  } catch {
    return [];
  }
}

const parseGpus = (json: string): Gpu[] => jsonArray(Gpu, json);
const parseTypes = (json: string): string[] => jsonArray(z.string().min(1).max(64), json);
