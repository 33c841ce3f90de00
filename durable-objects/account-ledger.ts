import { DurableObject } from "cloudflare:workers";
import { MetaTable } from "./meta-table.ts";
import { rateState, rateWindow, RateWindows } from "./ledger-rates.ts";

/**
 * One per account: the account's money, in integer nano-USD. An append-only ledger of entries
 * (credits, holds, settles, releases, expiries), each idempotent by its (kind, ref) and each
 * carrying its effect on the balance and on the amount held. The balance is the sum of the
 * entries' balance effects; available = balance - held, and it never goes below zero: a hold is
 * only placed when available covers it, and a settle never charges more than its hold.
 *
 * All mutations are synchronous SQLite work inside one call, so concurrent requests for one
 * account are serialized by the object and cannot overspend.
 */

import type {
  AdmitRequest,
  AdmitResult,
  EntryKind,
  HoldResult,
  LedgerAudit,
  LedgerEntry,
  LedgerSummary,
  LeaseSync,
  LeaseSyncResult,
  QuotaResult,
  RateState,
  SettleResult,
} from "./ledger-types.ts";

export type { AdmitRequest, AdmitResult, HoldResult, LedgerAudit, LedgerEntry, LedgerSummary, LeaseSync, LeaseSyncResult, QuotaResult, RateState, SettleResult };

const SCHEMA_VERSION = 2;
/** How often the expiry alarm looks again while holds remain. */
const MAX_ALARM_DELAY_MS = 60 * 60_000;

export class AccountLedger extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly meta: MetaTable;
  private readonly rates: RateWindows;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.meta = new MetaTable(this.sql);
    this.rates = new RateWindows(this.sql);
    void ctx.blockConcurrencyWhile(async () => this.migrate());
  }

  private migrate(): void {
    const version = this.meta.number("schema") ?? 0;
    if (version >= SCHEMA_VERSION) return;
    if (version < 1) this.migrateV1();
    // v2: per-key rate windows; holds remember what they counted against them.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS rates (
      key_id TEXT NOT NULL, window INTEGER NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL,
      PRIMARY KEY (key_id, window))`);
    this.sql.exec("ALTER TABLE holds ADD COLUMN rate_key TEXT");
    this.sql.exec("ALTER TABLE holds ADD COLUMN rate_window INTEGER");
    this.sql.exec("ALTER TABLE holds ADD COLUMN rate_tokens INTEGER");
    this.meta.set("schema", SCHEMA_VERSION);
  }

  private migrateV1(): void {
    this.sql.exec(`CREATE TABLE IF NOT EXISTS entries (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      kind TEXT NOT NULL, ref TEXT NOT NULL,
      amount INTEGER NOT NULL, held INTEGER NOT NULL, at INTEGER NOT NULL,
      UNIQUE (kind, ref))`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS holds (
      id TEXT PRIMARY KEY, amount INTEGER NOT NULL, expires_at INTEGER NOT NULL)`);
    this.sql.exec("CREATE INDEX IF NOT EXISTS holds_expiry ON holds (expires_at)");
    this.sql.exec(`CREATE TABLE IF NOT EXISTS quota (day TEXT PRIMARY KEY, used INTEGER NOT NULL)`);
    this.meta.set("balance", 0);
    this.meta.set("held", 0);
  }

  private totals(): { balance: number; held: number } {
    return { balance: this.meta.number("balance") ?? 0, held: this.meta.number("held") ?? 0 };
  }

  /** Append an entry and apply its effects; false (and nothing applied) when (kind, ref) exists. */
  private append(kind: EntryKind, ref: string, amount: number, held: number): boolean {
    if (this.entry(kind, ref)) return false;
    this.insertEntry(kind, ref, amount, held);
    const t = this.totals();
    this.setTotals(t, { balance: t.balance + amount, held: t.held + held });
    return true;
  }

  /** The entry row alone: its effects on the totals are the caller's to write (see applyCharges). */
  private insertEntry(kind: EntryKind, ref: string, amount: number, held: number): void {
    this.sql.exec("INSERT INTO entries (kind, ref, amount, held, at) VALUES (?, ?, ?, ?, ?)", kind, ref, amount, held, Date.now());
  }

  private setTotals(before: { balance: number; held: number }, after: { balance: number; held: number }): void {
    if (after.balance !== before.balance) this.meta.set("balance", after.balance);
    if (after.held !== before.held) this.meta.set("held", after.held);
  }

  private entry(kind: EntryKind, ref: string): { amount: number; held: number } | null {
    return this.sql.exec<{ amount: number; held: number }>("SELECT amount, held FROM entries WHERE kind = ? AND ref = ?", kind, ref).toArray()[0] ?? null;
  }

  /**
   * Pull credits recorded in D1 that this ledger has not applied (the seed, or a credit whose
   * second step did not reach the ledger). Done when the ledger first serves an account and
   * before refusing a hold.
   */
  private async sync(accountId: string): Promise<void> {
    const rows = await this.env.DB.prepare("SELECT reference, amount_nano FROM credits WHERE account_id = ?")
      .bind(accountId)
      .all<{ reference: string; amount_nano: number }>();
    this.ctx.storage.transactionSync(() => {
      for (const r of rows.results) this.append("credit", r.reference, r.amount_nano, 0);
      this.meta.set("account", accountId);
    });
  }

  private async ensureSynced(accountId: string): Promise<void> {
    if (this.meta.get("account") === null) await this.sync(accountId);
  }

  /** Apply a credit once per reference. */
  async credit(accountId: string, reference: string, amountNano: number): Promise<{ applied: boolean; balanceNano: number }> {
    assertAmount(amountNano);
    await this.ensureSynced(accountId);
    const applied = this.ctx.storage.transactionSync(() => this.append("credit", reference, amountNano, 0));
    return { applied, balanceNano: this.totals().balance };
  }

  /**
   * Reserve `amountNano` for invocation `id` until it settles or `ttlMs` passes. Idempotent:
   * holding the same id again returns the existing hold.
   */
  async hold(accountId: string, id: string, amountNano: number, ttlMs: number): Promise<HoldResult> {
    assertAmount(amountNano);
    await this.ensureSynced(accountId);
    let result = this.tryHold(id, amountNano, ttlMs);
    if (!result.ok) {
      await this.sync(accountId); // a credit may have landed in D1 without reaching us
      result = this.tryHold(id, amountNano, ttlMs);
    }
    return result;
  }

  /**
   * Admit one request, atomically: the key's per-minute request and token limits, then the free
   * chute's daily quota or the paid chute's hold. Nothing is counted or held unless all pass.
   */
  async admit(accountId: string, req: AdmitRequest): Promise<AdmitResult> {
    await this.ensureSynced(accountId);
    let result = this.tryAdmit(req);
    if (!result.ok && result.reason === "funds") {
      await this.sync(accountId); // a credit may have landed in D1 without reaching us
      result = this.tryAdmit(req);
    }
    return result;
  }

  private tryAdmit(req: AdmitRequest): AdmitResult {
    return this.ctx.storage.transactionSync((): AdmitResult => {
      const { window, resetMs } = rateWindow(Date.now());
      const used = this.rates.used(req.rate.keyId, window);
      const state = (requests: number, tokens: number): RateState => rateState(req.rate, requests, tokens, resetMs);
      const before = state(used.requests, used.tokens);
      if (req.rate.rpm > 0 && used.requests + 1 > req.rate.rpm) return { ok: false, reason: "requests", rate: before };
      if (req.rate.tpm > 0 && used.tokens + req.rate.tokens > req.rate.tpm) return { ok: false, reason: "tokens", rate: before };
      let holdNano = 0;
      if (req.hold) {
        const held = this.tryHold(req.invocationId, req.hold.amountNano, req.hold.ttlMs);
        if (!held.ok) return { ok: false, reason: "funds", rate: before, availableNano: held.availableNano, requiredNano: held.requiredNano };
        holdNano = held.holdNano;
        this.sql.exec(
          "UPDATE holds SET rate_key = ?, rate_window = ?, rate_tokens = ? WHERE id = ?",
          req.rate.keyId,
          window,
          req.rate.tokens,
          req.invocationId,
        );
      } else if (req.freeQuota !== undefined) {
        const quota = this.countFree(req.freeQuota);
        if (!quota.ok) return { ok: false, reason: "quota", rate: before, quota };
      }
      this.rates.count(req.rate.keyId, window, 1, req.rate.tokens);
      return { ok: true, rate: state(used.requests + 1, used.tokens + req.rate.tokens), holdNano };
    });
  }

  private tryHold(id: string, amountNano: number, ttlMs: number): HoldResult {
    return this.ctx.storage.transactionSync((): HoldResult => {
      const existing = this.entry("hold", id);
      const { balance, held } = this.totals();
      if (existing) return { ok: true, holdNano: existing.held, availableNano: balance - held };
      if (balance - held < amountNano) return { ok: false, availableNano: balance - held, requiredNano: amountNano };
      const expiresAt = Date.now() + ttlMs;
      this.append("hold", id, 0, amountNano);
      this.sql.exec("INSERT INTO holds (id, amount, expires_at) VALUES (?, ?, ?)", id, amountNano, expiresAt);
      this.armAlarm(expiresAt);
      return { ok: true, holdNano: amountNano, availableNano: balance - held - amountNano };
    });
  }

  /**
   * Charge the real cost of invocation `id` and release the rest of its hold. Never charges more
   * than the hold. A settle for a hold that already expired (or was never placed) charges at most
   * what is available, so the balance cannot go below what other holds reserve. Idempotent.
   */
  async settle(accountId: string, id: string, costNano: number, usedTokens?: number): Promise<SettleResult> {
    assertAmount(costNano);
    await this.ensureSynced(accountId);
    return this.ctx.storage.transactionSync((): SettleResult => {
      if (usedTokens !== undefined) this.correctRate(id, usedTokens);
      const done = this.entry("settle", id);
      if (done) {
        const released = this.entry("release", id);
        return { chargedNano: -done.amount, releasedNano: released ? -released.held : 0, replay: true };
      }
      const hold = this.sql.exec<{ amount: number }>("SELECT amount FROM holds WHERE id = ?", id).toArray()[0];
      if (hold) {
        const charged = Math.min(costNano, hold.amount);
        this.append("settle", id, -charged, -charged);
        this.append("release", id, 0, -(hold.amount - charged));
        this.sql.exec("DELETE FROM holds WHERE id = ?", id);
        return { chargedNano: charged, releasedNano: hold.amount - charged, replay: false };
      }
      const { balance, held } = this.totals();
      const charged = Math.min(costNano, Math.max(0, balance - held));
      this.append("settle", id, -charged, 0);
      return { chargedNano: charged, releasedNano: 0, replay: false };
    });
  }

  /**
   * An isolate's wallet calls in (see worker/billing/wallet.ts): apply the charges of its
   * requests that ended, size its lease, and hand out or take back rate-limit grants. The lease
   * is a hold like any other (row `lease:<id>` in holds; entries hold/release `lease:<id>#<n>`),
   * so the audit and the expiry alarm cover it, and a charge never exceeds what it holds.
   */
  async lease(accountId: string, req: LeaseSync): Promise<LeaseSyncResult> {
    for (const c of req.charges) assertAmount(c.costNano);
    assertAmount(req.mustNano);
    assertAmount(req.extraNano);
    await this.ensureSynced(accountId);
    const charged = this.ctx.storage.transactionSync(() => this.applyCharges(req));
    // Sizing is absolute, so it can run again after a credit is pulled from D1.
    let held = this.ctx.storage.transactionSync(() => this.sizeLease(req));
    if (held < req.mustNano) {
      await this.sync(accountId);
      held = this.ctx.storage.transactionSync(() => this.sizeLease(req));
    }
    const rates = this.ctx.storage.transactionSync(() => req.rates.map((r) => this.rates.grant(r, Date.now())));
    const { balance, held: allHeld } = this.totals();
    const version = (this.meta.number("lease_version") ?? 0) + 1;
    this.meta.set("lease_version", version);
    return { version, heldNano: held, availableNano: balance - allHeld, charged, rates };
  }

  private leaseRow(leaseId: string): { amount: number } | undefined {
    return this.sql.exec<{ amount: number }>("SELECT amount FROM holds WHERE id = ?", `lease:${leaseId}`).toArray()[0];
  }

  /** A fresh entry reference for a lease's hold, release or expiry (a lease changes size many times). */
  private leaseRef(holdId: string): string {
    const seq = (this.meta.number("lease_seq") ?? 0) + 1;
    this.meta.set("lease_seq", seq);
    return `${holdId}#${seq}`;
  }

  private applyCharges(req: LeaseSync): Record<string, number> {
    const charged: Record<string, number> = {};
    // The lease's amount and the account's totals are read once and written once for the whole
    // batch: per charge, one lookup (applied already?) and one entry row.
    let lease = this.leaseRow(req.leaseId)?.amount ?? null;
    const before = lease;
    const start = this.totals();
    const totals = { ...start };
    for (const c of req.charges) {
      const done = this.entry("settle", c.id);
      if (done) {
        charged[c.id] = -done.amount;
        continue;
      }
      // Without its lease (it expired: its isolate went quiet for longer than the TTL), a charge
      // takes what is free.
      const amount = Math.min(c.costNano, lease ?? Math.max(0, totals.balance - totals.held));
      const held = lease === null ? 0 : -amount;
      this.insertEntry("settle", c.id, -amount, held);
      totals.balance -= amount;
      totals.held += held;
      if (lease !== null) lease -= amount;
      charged[c.id] = amount;
    }
    this.setTotals(start, totals);
    if (lease !== null && lease !== before) this.sql.exec("UPDATE holds SET amount = ? WHERE id = ?", lease, `lease:${req.leaseId}`);
    return charged;
  }

  private sizeLease(req: LeaseSync): number {
    const holdId = `lease:${req.leaseId}`;
    const current = this.leaseRow(req.leaseId)?.amount ?? 0;
    const { balance, held } = this.totals();
    const available = balance - held;
    let amount = current;
    const wanted = req.mustNano + req.extraNano;
    if (wanted > current) {
      const must = Math.min(Math.max(0, req.mustNano - current), available);
      const extra = Math.min(wanted - current - must, Math.floor((available - must) / 2));
      const grant = must + Math.max(0, extra);
      if (grant > 0) this.append("hold", this.leaseRef(holdId), 0, grant);
      amount += grant;
    } else if (req.shrink && wanted < current) {
      this.append("release", this.leaseRef(holdId), 0, -(current - wanted));
      amount = wanted;
    }
    if (amount === 0) {
      this.sql.exec("DELETE FROM holds WHERE id = ?", holdId);
      return 0;
    }
    const expiresAt = Date.now() + req.ttlMs;
    this.sql.exec(
      "INSERT INTO holds (id, amount, expires_at) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET amount = excluded.amount, expires_at = excluded.expires_at",
      holdId,
      amount,
      expiresAt,
    );
    this.armAlarm(expiresAt);
    return amount;
  }

  /** The request's real token count replaces its worst case in the window it was admitted in. */
  private correctRate(id: string, usedTokens: number): void {
    const h = this.sql
      .exec<{ rate_key: string | null; rate_window: number | null; rate_tokens: number | null }>(
        "SELECT rate_key, rate_window, rate_tokens FROM holds WHERE id = ?",
        id,
      )
      .toArray()[0];
    if (!h || h.rate_key === null || h.rate_window === null || h.rate_tokens === null) return;
    this.rates.uncountTokens(h.rate_key, h.rate_window, Math.max(0, h.rate_tokens - usedTokens));
  }

  /** Count one request of a free chute against today's quota (UTC day). */
  private countFree(limit: number): QuotaResult {
    const day = new Date().toISOString().slice(0, 10);
    const used = this.sql.exec<{ used: number }>("SELECT used FROM quota WHERE day = ?", day).toArray()[0]?.used ?? 0;
    if (used >= limit) return { ok: false, used, limit };
    this.sql.exec("INSERT OR REPLACE INTO quota (day, used) VALUES (?, ?)", day, used + 1);
    this.sql.exec("DELETE FROM quota WHERE day < ?", day);
    return { ok: true, used: used + 1, limit };
  }

  async summary(accountId: string): Promise<LedgerSummary> {
    await this.ensureSynced(accountId);
    const { balance, held } = this.totals();
    const holds = this.sql.exec<{ n: number }>("SELECT count(*) AS n FROM holds").one().n;
    return { balanceNano: balance, heldNano: held, availableNano: balance - held, holds };
  }

  /** The newest entries, newest first. */
  async entries(limit = 100): Promise<LedgerEntry[]> {
    return this.sql
      .exec<{ seq: number; kind: EntryKind; ref: string; amount: number; held: number; at: number }>(
        "SELECT * FROM entries ORDER BY seq DESC LIMIT ?",
        Math.max(1, Math.min(limit, 1000)),
      )
      .toArray()
      .map((r) => ({ seq: r.seq, kind: r.kind, ref: r.ref, amountNano: r.amount, heldNano: r.held, at: r.at }));
  }

  /** Check the ledger's invariants: totals equal the sums of the entries, and nothing is overspent. */
  async audit(): Promise<LedgerAudit> {
    const { balance, held } = this.totals();
    const sums = this.sql.exec<{ b: number | null; h: number | null }>("SELECT sum(amount) AS b, sum(held) AS h FROM entries").one();
    const holds = this.sql.exec<{ s: number | null; n: number }>("SELECT sum(amount) AS s, count(*) AS n FROM holds").one();
    const entriesBalanceNano = sums.b ?? 0;
    const entriesHeldNano = sums.h ?? 0;
    const holdsSumNano = holds.s ?? 0;
    return {
      balanceNano: balance,
      heldNano: held,
      availableNano: balance - held,
      holds: holds.n,
      entriesBalanceNano,
      entriesHeldNano,
      holdsSumNano,
      ok: entriesBalanceNano === balance && entriesHeldNano === held && holdsSumNano === held && balance - held >= 0,
    };
  }

  /** Release holds whose request vanished (the Worker that placed them never settled). */
  override async alarm(): Promise<void> {
    const now = Date.now();
    this.ctx.storage.transactionSync(() => {
      const expired = this.sql.exec<{ id: string; amount: number }>("SELECT id, amount FROM holds WHERE expires_at <= ?", now).toArray();
      for (const h of expired) {
        // A lease id is used again after it expires (its wallet comes back): each expiry gets its own entry.
        this.append("expire", h.id.startsWith("lease:") ? this.leaseRef(h.id) : h.id, 0, -h.amount);
        this.sql.exec("DELETE FROM holds WHERE id = ?", h.id);
      }
    });
    const next = this.sql.exec<{ t: number | null }>("SELECT min(expires_at) AS t FROM holds").one().t;
    if (next !== null) await this.ctx.storage.setAlarm(Math.min(next, now + MAX_ALARM_DELAY_MS));
  }

  private armAlarm(at: number): void {
    void this.ctx.storage.getAlarm().then((current) => {
      if (current === null || current > at) return this.ctx.storage.setAlarm(at);
    });
  }
}

function assertAmount(n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`amount must be a non-negative safe integer, got ${n}`);
}
