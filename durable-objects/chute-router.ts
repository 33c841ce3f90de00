import { DurableObject } from "cloudflare:workers";

/**
 * One per chute: the routing table of the chute's instances (announced by connected agents
 * through their MinerSession) and the leases (in-flight requests) on them. Picks the instance
 * with the fewest outstanding requests relative to its capacity; when every instance is full a
 * request waits a bounded time for a slot. Leases are stored, so a router evicted while idle
 * still knows what is in flight when it wakes.
 */

export interface RouterInstance {
  instanceId: string;
  minerId: string;
  maxConcurrency: number;
}

export interface AcquireRequest {
  /** Instances not to use (they already failed this request). */
  avoid: string[];
  /** How long to wait for a free slot when all are busy. */
  waitMs: number;
}

export type AcquireResult =
  | { ok: true; leaseId: string; instanceId: string; minerId: string }
  | { ok: false; code: "no_capacity" | "capacity_exceeded" };

export interface RouterSnapshot {
  instances: (RouterInstance & { inflight: number })[];
  waiting: number;
}

/** A lease not released within this time is presumed lost (its Worker died) and expires. */
const LEASE_TTL_MS = 30 * 60_000;
const SCHEMA_VERSION = 1;

interface Waiter {
  avoid: Set<string>;
  resolve: (r: AcquireResult) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class ChuteRouter extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly instances = new Map<string, RouterInstance>();
  private readonly leases = new Map<string, { instanceId: string; expiresAt: number }>();
  private readonly inflight = new Map<string, number>();
  private waiters: Waiter[] = [];
  /** When the lease-expiry alarm is armed for, or null. */
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    void ctx.blockConcurrencyWhile(async () => this.load());
  }

  private load(): void {
    this.sql.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)");
    const row = this.sql.exec<{ value: number }>("SELECT value FROM meta WHERE key = 'schema'").toArray()[0];
    if (!row || row.value < SCHEMA_VERSION) {
      this.sql.exec(`CREATE TABLE IF NOT EXISTS instances (
        instance_id TEXT PRIMARY KEY, miner_id TEXT NOT NULL, max_concurrency INTEGER NOT NULL)`);
      this.sql.exec(`CREATE TABLE IF NOT EXISTS leases (
        lease_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, expires_at INTEGER NOT NULL)`);
      this.sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", SCHEMA_VERSION);
    }
    for (const r of this.sql.exec<{ instance_id: string; miner_id: string; max_concurrency: number }>(
      "SELECT * FROM instances",
    )) {
      this.instances.set(r.instance_id, {
        instanceId: r.instance_id,
        minerId: r.miner_id,
        maxConcurrency: r.max_concurrency,
      });
    }
    const now = Date.now();
    this.sql.exec("DELETE FROM leases WHERE expires_at <= ?", now);
    for (const r of this.sql.exec<{ lease_id: string; instance_id: string; expires_at: number }>("SELECT * FROM leases")) {
      this.leases.set(r.lease_id, { instanceId: r.instance_id, expiresAt: r.expires_at });
      this.inflight.set(r.instance_id, (this.inflight.get(r.instance_id) ?? 0) + 1);
    }
  }

  /** Take a slot on the best instance, waiting up to `waitMs` when all are busy. */
  async acquire(req: AcquireRequest): Promise<AcquireResult> {
    const avoid = new Set(req.avoid);
    const now = this.tryAcquire(avoid);
    if (now.ok || now.code === "no_capacity" || req.waitMs <= 0) return now;
    return new Promise<AcquireResult>((resolve) => {
      const waiter: Waiter = {
        avoid,
        resolve,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve({ ok: false, code: "capacity_exceeded" });
        }, req.waitMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Give a slot back. Idempotent: releasing an unknown lease does nothing. */
  release(leaseId: string): void {
    const lease = this.leases.get(leaseId);
    if (!lease) return;
    this.leases.delete(leaseId);
    this.sql.exec("DELETE FROM leases WHERE lease_id = ?", leaseId);
    const n = (this.inflight.get(lease.instanceId) ?? 1) - 1;
    if (n > 0) this.inflight.set(lease.instanceId, n);
    else this.inflight.delete(lease.instanceId);
    this.serveWaiters();
  }

  /** Replace the instances one miner serves for this chute (an empty list removes them all). */
  register(minerId: string, instances: { instanceId: string; maxConcurrency: number }[]): void {
    for (const inst of [...this.instances.values()]) {
      if (inst.minerId === minerId) this.removeInstance(inst.instanceId);
    }
    for (const { instanceId, maxConcurrency } of instances) {
      this.instances.set(instanceId, { instanceId, minerId, maxConcurrency });
      this.sql.exec(
        "INSERT OR REPLACE INTO instances (instance_id, miner_id, max_concurrency) VALUES (?, ?, ?)",
        instanceId,
        minerId,
        maxConcurrency,
      );
    }
    this.serveWaiters();
  }

  /** Drop one instance (its miner went away or failed a job before its first token). */
  unregisterInstance(instanceId: string, minerId: string): void {
    const inst = this.instances.get(instanceId);
    if (inst && inst.minerId === minerId) this.removeInstance(instanceId);
    this.failHopelessWaiters();
  }

  snapshot(): RouterSnapshot {
    return {
      instances: [...this.instances.values()].map((i) => ({ ...i, inflight: this.inflight.get(i.instanceId) ?? 0 })),
      waiting: this.waiters.length,
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
    this.sql.exec("DELETE FROM instances WHERE instance_id = ?", instanceId);
  }

  private tryAcquire(avoid: Set<string>): AcquireResult {
    const best = this.pick(avoid);
    if (best === "none") return { ok: false, code: "no_capacity" };
    if (best === "full") return { ok: false, code: "capacity_exceeded" };
    const leaseId = crypto.randomUUID();
    const expiresAt = Date.now() + LEASE_TTL_MS;
    this.leases.set(leaseId, { instanceId: best.instanceId, expiresAt });
    this.inflight.set(best.instanceId, (this.inflight.get(best.instanceId) ?? 0) + 1);
    this.sql.exec(
      "INSERT INTO leases (lease_id, instance_id, expires_at) VALUES (?, ?, ?)",
      leaseId,
      best.instanceId,
      expiresAt,
    );
    if (this.alarmAt === null) this.armAlarm(expiresAt);
    return { ok: true, leaseId, instanceId: best.instanceId, minerId: best.minerId };
  }

  /**
   * Least outstanding requests relative to capacity; ties go to the instance with the most free
   * slots, then to the lowest id, so the choice is deterministic.
   */
  private pick(avoid: Set<string>): RouterInstance | "none" | "full" {
    let best: RouterInstance | undefined;
    let bestLoad = Infinity;
    let bestFree = -1;
    let any = false;
    for (const inst of this.instances.values()) {
      if (avoid.has(inst.instanceId)) continue;
      any = true;
      const busy = this.inflight.get(inst.instanceId) ?? 0;
      const free = inst.maxConcurrency - busy;
      if (free <= 0) continue;
      const load = busy / inst.maxConcurrency;
      if (
        load < bestLoad ||
        (load === bestLoad && free > bestFree) ||
        (load === bestLoad && free === bestFree && best !== undefined && inst.instanceId < best.instanceId)
      ) {
        best = inst;
        bestLoad = load;
        bestFree = free;
      }
    }
    return best ?? (any ? "full" : "none");
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0) {
      const waiter = this.waiters[0]!;
      const r = this.tryAcquire(waiter.avoid);
      if (!r.ok && r.code === "capacity_exceeded") return;
      this.waiters.shift();
      clearTimeout(waiter.timer);
      waiter.resolve(r);
    }
  }

  /** Waiters whose every possible instance is gone get 503 now rather than 429 later. */
  private failHopelessWaiters(): void {
    this.waiters = this.waiters.filter((w) => {
      if (this.pick(w.avoid) !== "none") return true;
      clearTimeout(w.timer);
      w.resolve({ ok: false, code: "no_capacity" });
      return false;
    });
  }

  /** One alarm, armed for the earliest lease expiry (leases are created in expiry order). */
  private armAlarm(at: number): void {
    this.alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }
}
