import { DurableObject } from "cloudflare:workers";

/**
 * One per chute: the routing table of the chute's instances (announced by connected agents
 * through their MinerSession) and the leases (in-flight requests) on them. Picks the instance
 * with the fewest outstanding requests relative to its capacity; when every instance is full a
 * request waits a bounded time for a slot.
 *
 * Leases live in memory only: a storage write per acquire and per release made every request
 * wait for a durable commit (locally it cut one router from ~8,500 to ~640 requests/s; see
 * `npm run bench:router`). If the router is evicted while requests are in flight (it is only
 * evicted when nothing has called it for a while), their counts are forgotten and their late
 * releases ignored; the agent still refuses work beyond its engine's capacity (a retryable
 * error, retried elsewhere), so an instance can never be overloaded, only briefly mis-weighted.
 * The instance table, which changes rarely, is stored.
 */

import { stubByName } from "../worker/runtime/object-ids.ts";
import type { ChuteScaler } from "./chute-scaler.ts";
import { MetaTable } from "./meta-table.ts";
import { HealthBook, healthFactor } from "./router-health.ts";
import type {
  AcquireRequest,
  AcquireResult,
  HandoverAnswer,
  InstanceHealth,
  LeaseRelease,
  LeaseReport,
  RouterInstance,
  RouterSnapshot,
} from "./router-types.ts";

export type { AcquireRequest, AcquireResult, HandoverAnswer, InstanceHealth, LeaseRelease, LeaseReport, RouterInstance, RouterSnapshot };

/** A lease not released within this time is presumed lost (its Worker died) and expires. */
const LEASE_TTL_MS = 30 * 60_000;
/** An affinity instance is chosen while its load is within this much of the least loaded. */
const AFFINITY_SLACK = 0.25;
/** Beyond this many lagging instances (see HealthBook) an isolate hands no slot over at all (the answer stays small). */
const MAX_LAGGING = 64;
const MAX_PREFIX_ENTRIES = 20_000;
/** The scaler is told about refused requests at most this often. */
const POKE_EVERY_MS = 2_000;
const SCHEMA_VERSION = 2;

interface Waiter {
  avoid: Set<string>;
  weight: number;
  prefixes: string[];
  resolve: (r: AcquireResult) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class ChuteRouter extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly meta: MetaTable;
  private readonly instances = new Map<string, RouterInstance>();
  /** What each instance's agent announced; its `maxConcurrency` is this capped by the chute's concurrency. */
  private readonly announced = new Map<string, number>();
  /** The chute's concurrency per instance (null until known). */
  private cap: number | null = null;
  private readonly leases = new Map<string, { instanceId: string; expiresAt: number; weight: number }>();
  private readonly inflight = new Map<string, number>();
  private waiters: Waiter[] = [];
  private readonly health = new HealthBook();
  /** Prefix hash -> the instance that last served it (insertion order = recency). */
  private readonly prefixes = new Map<string, string>();
  private affinityHits = 0;
  private handovers = 0;
  private requests = 0;
  private refused = 0;
  private pokedAt = 0;
  /** A poke held back by the rate limit, sent when the limit allows (none is ever dropped). */
  private pokeTimer: ReturnType<typeof setTimeout> | null = null;
  /** This router's chute (its name), learnt from calls; the scaler is reached by it. */
  private chuteId: string | null = null;
  /** When the lease-expiry alarm is armed for, or null. */
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.meta = new MetaTable(this.sql);
    void ctx.blockConcurrencyWhile(async () => this.load());
  }

  private load(): void {
    const version = this.meta.number("schema") ?? 0;
    if (version < SCHEMA_VERSION) {
      this.sql.exec(`CREATE TABLE IF NOT EXISTS instances (
        instance_id TEXT PRIMARY KEY, miner_id TEXT NOT NULL, max_concurrency INTEGER NOT NULL)`);
      if (version < 2) this.sql.exec("ALTER TABLE instances ADD COLUMN managed INTEGER NOT NULL DEFAULT 0");
      this.meta.set("schema", SCHEMA_VERSION);
    }
    this.cap = this.meta.number("cap");
    for (const r of this.sql.exec<{ instance_id: string; miner_id: string; max_concurrency: number; managed: number }>(
      "SELECT * FROM instances",
    )) {
      this.announced.set(r.instance_id, r.max_concurrency);
      this.instances.set(r.instance_id, {
        instanceId: r.instance_id,
        minerId: r.miner_id,
        maxConcurrency: this.capped(r.max_concurrency),
        managed: r.managed === 1,
      });
    }
    this.sql.exec("DROP TABLE IF EXISTS leases"); // stored by earlier versions
  }

  /** Take a slot on the best instance, waiting up to `waitMs` when all are busy. */
  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    if (req.released) this.releaseMany(req.released);
    const avoid = new Set(req.avoid);
    const prefixes = req.prefixes ?? [];
    if (req.chute) this.chuteId = req.chute;
    this.requests++;
    const weight = Math.max(1, req.weight ?? 1);
    const now = this.tryAcquire(avoid, prefixes, weight);
    if (now.ok) return { ...now, ...this.handover() };
    if (now.code === "no_capacity" || req.waitMs <= 0) return this.refuse(now);
    return new Promise<AcquireResult>((resolve) => {
      const waiter: Waiter = {
        avoid,
        weight,
        prefixes,
        resolve,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(this.refuse({ ok: false, code: "capacity_exceeded" }));
        }, req.waitMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Count a request turned away for lack of capacity, and let the chute's scaler know soon. */
  private refuse(r: AcquireResult): AcquireResult {
    this.refused++;
    this.pokeScaler();
    return r;
  }

  private pokeScaler(): void {
    const now = Date.now();
    const chuteId = this.chuteId;
    // (Harnesses such as bench/router run the router without a scaler.)
    const ns: DurableObjectNamespace<ChuteScaler> | undefined = this.env.CHUTE_SCALER;
    if (chuteId === null || ns === undefined || this.pokeTimer !== null) return;
    const wait = this.pokedAt + POKE_EVERY_MS - now;
    if (wait > 0) {
      this.pokeTimer = setTimeout(() => {
        this.pokeTimer = null;
        this.pokeScaler();
      }, wait);
      return;
    }
    this.pokedAt = now;
    const scaler = stubByName(ns, chuteId);
    this.ctx.waitUntil(scaler.poke(chuteId).catch(() => undefined));
  }

  /**
   * Whether an isolate may hand a finished request's slot to its next request (see roomy), and
   * on which instances it may not (they lag behind the others: the router routes those).
   */
  private handover(): HandoverAnswer {
    if (!this.roomy()) return { roomy: false };
    const lagging = this.health.lagging();
    if (lagging.length > MAX_LAGGING) return { roomy: false };
    return lagging.length > 0 ? { roomy: true, lagging } : { roomy: true };
  }

  /** Nobody waits, and a slot is free besides (so a request of another isolate would not have been turned away). */
  private roomy(): boolean {
    if (this.waiters.length > 0) return false;
    for (const inst of this.instances.values()) if ((this.inflight.get(inst.instanceId) ?? 0) < inst.maxConcurrency) return true;
    return false;
  }

  /** Give a slot back, with how the request went. Idempotent: releasing an unknown lease does nothing. */
  release(leaseId: string, report?: LeaseReport): void {
    const lease = this.leases.get(leaseId);
    if (!lease) return;
    if (report && this.instances.has(lease.instanceId)) this.health.observe(lease.instanceId, report);
    this.leases.delete(leaseId);
    const n = (this.inflight.get(lease.instanceId) ?? lease.weight) - lease.weight;
    if (n > 0) this.inflight.set(lease.instanceId, n);
    else this.inflight.delete(lease.instanceId);
    this.serveWaiters();
  }

  /**
   * Give several slots back at once (an isolate's releases, sent together), or note the ones it
   * handed to its next request. Answers whether the isolate may go on handing slots over.
   */
  releaseMany(released: LeaseRelease[]): HandoverAnswer {
    for (const r of released) {
      if (r.handedOver) this.handedOver(r.leaseId, r.report, r.handedOver);
      else this.release(r.leaseId, r.report);
    }
    return this.handover();
  }

  /**
   * A lease's request ended and the isolate gave its slot to its next request: the report counts
   * for the instance, the new request counts as routed (the scaler reads that), its prefixes point
   * at the instance, and the lease lives on. A lease the router no longer knows is not revived:
   * its release overtook this note (two calls in flight from one isolate; the requests still
   * count, for the instance the note names), or it expired or the router restarted.
   */
  private handedOver(leaseId: string, report: LeaseReport | undefined, note: { prefixes: string[]; instanceId?: string }): void {
    const lease = this.leases.get(leaseId);
    const instanceId = lease?.instanceId ?? note.instanceId;
    if (instanceId === undefined || !this.instances.has(instanceId)) return;
    if (report) this.health.observe(instanceId, report);
    this.requests++;
    this.handovers++;
    if (lease) lease.expiresAt = Date.now() + LEASE_TTL_MS;
    this.remember(note.prefixes, instanceId);
  }

  /** Replace the instances one miner serves for this chute (an empty list removes them all). */
  register(
    minerId: string,
    instances: { instanceId: string; maxConcurrency: number; managed?: boolean }[],
    chuteId?: string,
    /** The chute's concurrency per instance, which caps what agents announce. */
    concurrency?: number,
  ): void {
    if (chuteId) this.chuteId = chuteId;
    if (concurrency !== undefined && concurrency !== this.cap) this.setConcurrency(concurrency);
    const before = new Set([...this.instances.values()].filter((i) => i.minerId === minerId).map((i) => i.instanceId));
    for (const id of before) {
      if (!instances.some((i) => i.instanceId === id)) this.removeInstance(id);
    }
    for (const { instanceId, maxConcurrency: announced, managed = false } of instances) {
      const known = this.instances.get(instanceId);
      const maxConcurrency = this.capped(announced);
      // Re-announcing an instance keeps its health (e.g. when the agent adds another instance).
      if (known && known.minerId === minerId && this.announced.get(instanceId) === announced && known.managed === managed) continue;
      this.announced.set(instanceId, announced);
      this.instances.set(instanceId, { instanceId, minerId, maxConcurrency, managed });
      this.sql.exec(
        "INSERT OR REPLACE INTO instances (instance_id, miner_id, max_concurrency, managed) VALUES (?, ?, ?, ?)",
        instanceId,
        minerId,
        announced,
        managed ? 1 : 0,
      );
    }
    this.serveWaiters();
    this.pokeScaler();
  }

  /**
   * The chute's concurrency per instance changed: every instance takes at most that many
   * requests from now on (in-flight ones above a lowered cap finish; no new ones start).
   */
  setConcurrency(concurrency: number): void {
    this.cap = concurrency;
    this.meta.set("cap", concurrency);
    for (const inst of this.instances.values()) inst.maxConcurrency = this.capped(this.announced.get(inst.instanceId) ?? inst.maxConcurrency);
    this.serveWaiters();
  }

  private capped(announced: number): number {
    return this.cap === null ? announced : Math.min(announced, this.cap);
  }

  /** Drop one instance (its miner went away or failed a job before its first token). */
  unregisterInstance(instanceId: string, minerId: string): void {
    const inst = this.instances.get(instanceId);
    if (inst && inst.minerId === minerId) this.removeInstance(instanceId);
    this.failHopelessWaiters();
  }

  snapshot(): RouterSnapshot {
    return {
      instances: [...this.instances.values()].map((i) => ({
        ...i,
        inflight: this.inflight.get(i.instanceId) ?? 0,
        health: this.health.of(i.instanceId),
      })),
      waiting: this.waiters.length,
      affinityHits: this.affinityHits,
      handovers: this.handovers,
      stats: {
        requests: this.requests,
        refused: this.refused,
        ...this.health.stats(),
      },
    };
  }

  override async alarm(): Promise<void> {
    const now = Date.now();
    for (const [id, lease] of this.leases) if (lease.expiresAt <= now) this.release(id);
    this.alarmAt = null;
    let earliest = Infinity;
    for (const lease of this.leases.values()) earliest = Math.min(earliest, lease.expiresAt);
    if (earliest !== Infinity) this.armAlarm(earliest);
  }

  private removeInstance(instanceId: string): void {
    this.instances.delete(instanceId);
    this.announced.delete(instanceId);
    this.health.forget(instanceId);
    this.sql.exec("DELETE FROM instances WHERE instance_id = ?", instanceId);
  }

  private tryAcquire(avoid: Set<string>, prefixes: string[], weight: number): AcquireResult {
    const picked = this.pick(avoid, prefixes, weight);
    if (picked === "none") return { ok: false, code: "no_capacity" };
    if (picked === "full") return { ok: false, code: "capacity_exceeded" };
    const { inst: best, affinity } = picked;
    if (affinity) this.affinityHits++;
    this.remember(prefixes, best.instanceId);
    const leaseId = crypto.randomUUID();
    const expiresAt = Date.now() + LEASE_TTL_MS;
    this.leases.set(leaseId, { instanceId: best.instanceId, expiresAt, weight });
    this.inflight.set(best.instanceId, (this.inflight.get(best.instanceId) ?? 0) + weight);
    if (this.alarmAt === null) this.armAlarm(expiresAt);
    return { ok: true, leaseId, instanceId: best.instanceId, minerId: best.minerId, affinity };
  }

  /** The instance now serves these prefixes (the most recent entries are kept). */
  private remember(prefixes: string[], instanceId: string): void {
    for (const p of prefixes) {
      this.prefixes.delete(p);
      this.prefixes.set(p, instanceId);
    }
    while (this.prefixes.size > MAX_PREFIX_ENTRIES) this.prefixes.delete(this.prefixes.keys().next().value!);
  }

  /**
   * The instance with the lowest cost: outstanding requests relative to capacity, weighted by
   * health (recent errors, and speed relative to the fastest instance), so slow or failing
   * instances get less traffic. Instances in a failure backoff are skipped while any other can
   * serve. Ties go to the instance with the most free slots, then the lowest id (deterministic).
   * Prefix affinity: the instance that last served the longest matching prefix wins while its
   * load is within AFFINITY_SLACK of the best.
   */
  private pick(avoid: Set<string>, prefixes: string[] = [], weight = 1): { inst: RouterInstance; affinity: boolean } | "none" | "full" {
    const now = Date.now();
    const fastest = this.health.fastest();
    const candidates: { inst: RouterInstance; cost: number; load: number; free: number }[] = [];
    const resting: typeof candidates = [];
    let any = false;
    for (const inst of this.instances.values()) {
      // An instance too small for the request's weight can never serve it.
      if (avoid.has(inst.instanceId) || inst.maxConcurrency < weight) continue;
      any = true;
      const busy = this.inflight.get(inst.instanceId) ?? 0;
      const free = inst.maxConcurrency - busy;
      if (free < weight) continue;
      const h = this.health.get(inst.instanceId);
      const load = (busy + weight) / inst.maxConcurrency;
      const cost = load * healthFactor(h, fastest);
      (h?.disabledUntil && h.disabledUntil > now ? resting : candidates).push({ inst, cost, load, free });
    }
    const pool = candidates.length > 0 ? candidates : resting;
    if (pool.length === 0) return any ? "full" : "none";
    // One pass for the best (no sort: an acquire on a large fleet costs O(instances), not more).
    const order = (a: (typeof pool)[number], b: (typeof pool)[number]) =>
      a.cost - b.cost || b.free - a.free || (a.inst.instanceId < b.inst.instanceId ? -1 : 1);
    let best = pool[0]!;
    for (const c of pool) if (order(c, best) < 0) best = c;
    for (let i = prefixes.length - 1; i >= 0; i--) {
      const owner = this.prefixes.get(prefixes[i]!);
      if (owner === undefined) continue;
      const match = pool.find((c) => c.inst.instanceId === owner);
      if (match && match.load <= best.load + AFFINITY_SLACK) return { inst: match.inst, affinity: true };
      break; // the longest known prefix's instance is busy or gone: plain balancing
    }
    return { inst: best.inst, affinity: false };
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0) {
      const waiter = this.waiters[0]!;
      const r = this.tryAcquire(waiter.avoid, waiter.prefixes, waiter.weight);
      if (!r.ok && r.code === "capacity_exceeded") return;
      this.waiters.shift();
      clearTimeout(waiter.timer);
      waiter.resolve(r);
    }
  }

  /** Waiters whose every possible instance is gone get 503 now rather than 429 later. */
  private failHopelessWaiters(): void {
    this.waiters = this.waiters.filter((w) => {
      if (this.pick(w.avoid, [], w.weight) !== "none") return true;
      clearTimeout(w.timer);
      w.resolve({ ok: false, code: "no_capacity" });
      return false;
    });
  }

  /** One alarm, armed for the earliest lease expiry; it re-arms for the next (a handed-over lease expires later than planned). */
  private armAlarm(at: number): void {
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }
}
