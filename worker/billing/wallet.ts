import type { AccountLedger } from "../../durable-objects/account-ledger.ts";
import type { LeaseSync, LeaseSyncResult, RateRequest, RateState } from "../../durable-objects/ledger-types.ts";
import { log } from "../log.ts";
import { RateGrants, type RateTaken } from "./rate-grants.ts";
import { awaitShared } from "../runtime/shared-wait.ts";
import { SharedTimer } from "../runtime/shared-timer.ts";
import { callFresh } from "../runtime/stub-retry.ts";

/**
 * An isolate's wallet for one account: a slice of the account's balance (a lease, held on the
 * account's AccountLedger like any hold) and slices of its keys' per-minute rate limits, spent
 * locally. A request busy enough to use it is admitted without a Durable Object round trip, and
 * its charge is sent with others in one call at most FLUSH_AFTER_MS later; the ledger is called
 * only when the slice runs short, to flush charges, and to give the slice back when the
 * isolate goes quiet.
 *
 * Nothing can be overspent: a request is admitted only when the unspent part of the lease
 * covers its worst case, the lease only shrinks when nothing is in flight, and the ledger
 * never charges a lease more than it holds. A refusal (402 or 429) is the ledger's answer to a
 * call made after the request arrived, so it is never refused on a stale view.
 */

/**
 * Charges wait at most this long to be sent together. Each ledger call has a fixed cost (a
 * Durable Object round trip and its transactions): at 500 requests/s, 100 ms puts 50 charges in a
 * call rather than 5. The balance the ledger shows trails the requests by at most that much.
 * (bench:ab small, 100 against 50 ms: +10.2%, +4.3% and +4.3% requests/s, workerd CPU per
 * request -8.7%, -1.7% and -1.4%.)
 */
const FLUSH_AFTER_MS = 100;
/** After a failed call, queued charges are sent again this much later. */
const RETRY_AFTER_MS = 1_000;
/** The lease is given back after this long without a request in flight. */
const IDLE_CLOSE_MS = 250;
/** The slice asked for on top of what the waiting requests need, in typical worst cases. */
const SLICE_REQUESTS = 32;

export interface WalletAsk {
  invocationId: string;
  /** The request's worst-case cost. */
  amountNano: number;
  rate: RateRequest;
  ttlMs: number;
}

export type WalletAdmit =
  | { ok: true; rate: RateState; settle: (costNano: number, usedTokens: number) => Promise<number> }
  | { ok: false; reason: "requests" | "tokens"; rate: RateState }
  | { ok: false; reason: "funds"; rate: RateState; availableNano: number; requiredNano: number };

interface Charge {
  id: string;
  costNano: number;
  resolve: (charged: number) => void;
}

type LedgerStub = DurableObjectStub<AccountLedger>;

/**
 * A lease outlives a silent isolate this long before the ledger takes it back. Every call renews
 * it, and an admission renews it when the last call is a third of that old. (A request that
 * outlives a lease nobody renewed is settled like a late settle: never more than is available.)
 */
const LEASE_TTL_MS = 10 * 60_000;

export class Wallet {
  private readonly leaseId = crypto.randomUUID();
  /** What the ledger holds for the lease, after the charges it has applied (as of `version`). */
  private held = 0;
  private version = 0;
  /** Worst cases of the requests admitted here and not yet settled. */
  private reserved = 0;
  /** Charges not yet applied by the ledger as far as this wallet knows (queued, or in a call under way). */
  private unapplied = 0;
  private queue: Charge[] = [];
  private readonly rates = new RateGrants();
  /** The ledger's available balance outside every lease, as of the last call. */
  private ledgerAvailable = 0;
  private inflight = 0;
  private waiting: WalletAsk[] = [];
  private calls = 0;
  private lastCallAt = 0;
  /** Sends the queued charges (armed by whichever request settles first, cancelled by any call). */
  private readonly flushTimer = new SharedTimer();
  private readonly idleTimer = new SharedTimer();
  private typicalNano = 0;
  /** A call giving the lease back is under way: requests go to the ledger directly meanwhile. */
  closing = false;
  /** When that call began (Date.now()). */
  closingSince = 0;
  /** Resolved when the wallet has closed or is busy again (the last request waits for it). */
  private quietWaiters: (() => void)[] = [];

  constructor(
    private readonly accountId: string,
    private readonly ledger: () => LedgerStub,
    private readonly onClosed: () => void,
  ) {}

  /** Whether a lease is open or a request of the account is in flight here. */
  get active(): boolean {
    return this.held > 0 || this.inflight > 0 || this.waiting.length > 0 || this.calls > 0;
  }

  /**
   * Admit a request from the slice. When the slice cannot cover it, this request calls the
   * ledger itself (asking for what every waiting request needs) and the answer is final: each
   * request awaits only its own calls (a Worker request cannot safely wait on another's I/O).
   */
  async admit(ask: WalletAsk): Promise<WalletAdmit> {
    this.cancelIdle();
    this.typicalNano = this.typicalNano === 0 ? ask.amountNano : Math.round(0.8 * this.typicalNano + 0.2 * ask.amountNano);
    const taken = this.tryTake(ask);
    if (taken.ok) {
      // This request is in flight, so the call is seen through.
      if (this.calls === 0 && Date.now() - this.lastCallAt > LEASE_TTL_MS / 3) this.call(false).catch(() => undefined);
      return taken;
    }
    this.waiting.push(ask);
    try {
      await this.call(false);
    } finally {
      this.waiting = this.waiting.filter((w) => w !== ask);
    }
    const after = this.tryTake(ask);
    if (!after.ok) this.maybeIdle();
    return after;
  }

  private tryTake(ask: WalletAsk): WalletAdmit {
    const now = Date.now();
    const check = this.rates.check(ask.rate, now);
    if (check.refused) return { ok: false, reason: check.refused, rate: check.state };
    const free = this.held - this.reserved - this.unapplied;
    if (free < ask.amountNano) {
      return { ok: false, reason: "funds", rate: check.state, availableNano: Math.max(0, free) + this.ledgerAvailable, requiredNano: ask.amountNano };
    }
    this.reserved += ask.amountNano;
    this.inflight++;
    const { taken, state } = this.rates.take(check, now);
    let settled: Promise<number> | null = null;
    return {
      ok: true,
      rate: state,
      settle: (costNano, usedTokens) => (settled ??= this.settle(ask, taken, costNano, usedTokens)),
    };
  }

  /**
   * The request ended: its worst case returns to the slice at once and its charge is sent with
   * others within FLUSH_AFTER_MS. Resolves with what the ledger charged.
   */
  private settle(ask: WalletAsk, taken: RateTaken, costNano: number, usedTokens: number): Promise<number> {
    const charge = Math.min(Math.max(0, costNano), ask.amountNano);
    this.reserved -= ask.amountNano;
    this.inflight--;
    this.rates.settle(ask.rate.keyId, taken, usedTokens);
    if (charge === 0) {
      this.maybeIdle();
      return Promise.resolve(0);
    }
    this.unapplied += charge;
    // Created by this request, whose lifetime (waitUntil) lasts until the flush resolves it.
    const applied = new Promise<number>((resolve) => this.queue.push({ id: ask.invocationId, costNano: charge, resolve }));
    this.flushTimer.arm(FLUSH_AFTER_MS, () => this.call(false).catch(() => undefined));
    return awaitShared(applied).then((charged) => {
      this.maybeIdle();
      return charged;
    });
  }

  /**
   * Resolves once the wallet has given its lease back, or a newer request is in flight (and
   * will see it through): the last request's lifetime (waitUntil) covers the lease's return.
   */
  quiet(): Promise<void> {
    if (!this.active || this.inflight > 0 || this.waiting.length > 0) return Promise.resolve();
    return awaitShared(new Promise((resolve) => this.quietWaiters.push(resolve)));
  }

  private idle(): boolean {
    return this.inflight === 0 && this.waiting.length === 0 && this.calls === 0;
  }

  private maybeIdle(): void {
    if (!this.idle()) return;
    this.idleTimer.arm(IDLE_CLOSE_MS, () => {
      if (this.idle()) this.close().catch(() => undefined);
      else this.wake();
    });
  }

  private cancelIdle(): void {
    this.idleTimer.cancel();
    this.wake();
  }

  private wake(): void {
    const waiters = this.quietWaiters;
    this.quietWaiters = [];
    for (const w of waiters) w();
  }

  /** Give everything back: the rest of the lease, and unused rate grants. */
  private async close(): Promise<void> {
    this.closing = true;
    this.closingSince = Date.now();
    try {
      await this.call(true);
      if (this.held === 0 && this.idle() && this.queue.length === 0) {
        this.rates.clear();
        this.onClosed();
      }
    } finally {
      this.closing = false;
      this.wake();
    }
  }

  /**
   * One call to the ledger: the queued charges, the lease sized for what is reserved and
   * waiting (plus a slice), rate grants. Calls may overlap; the ledger's version orders answers.
   */
  private async call(closing: boolean): Promise<void> {
    this.flushTimer.cancel();
    const batch = this.queue;
    this.queue = [];
    const batchNano = sum(batch);
    const waitingNano = this.waiting.reduce((s, w) => s + w.amountNano, 0);
    const req: LeaseSync = {
      leaseId: this.leaseId,
      charges: batch.map((c) => ({ id: c.id, costNano: c.costNano })),
      mustNano: closing ? 0 : this.reserved + (this.unapplied - batchNano) + waitingNano,
      extraNano: closing ? 0 : this.extraWanted(waitingNano),
      shrink: closing,
      ttlMs: Math.min(LEASE_TTL_MS, this.waiting[0]?.ttlMs ?? LEASE_TTL_MS),
      rates: this.rates.requests(this.waiting.map((w) => w.rate), closing, Date.now()),
    };
    this.calls++;
    this.lastCallAt = Date.now();
    let res: LeaseSyncResult;
    try {
      res = await callWithRetry(this.ledger, this.accountId, req);
    } catch (err) {
      // The charges go back in the queue and are tried again in a while (their requests wait
      // for them). If the ledger never answers, the lease expires there and those requests are
      // not charged (logged).
      this.queue = [...batch, ...this.queue];
      log.error("wallet.sync_failed", { component: "gateway", accountId: this.accountId, charges: batch.length, error: String(err) });
      if (this.queue.length > 0) this.flushTimer.arm(RETRY_AFTER_MS, () => this.call(false).catch(() => undefined));
      throw err;
    } finally {
      this.calls--;
    }
    this.unapplied -= batchNano;
    if (res.version > this.version) {
      this.version = res.version;
      this.held = res.heldNano;
      this.ledgerAvailable = res.availableNano;
    }
    for (const c of batch) c.resolve(res.charged[c.id] ?? 0);
    this.rates.apply(res.rates, Date.now());
  }

  /**
   * The slice asked for on top of what must be held, once less than half a slice would be left
   * unspent (otherwise a call that flushes charges, or asks for rate grants, changes nothing else).
   */
  private extraWanted(waitingNano: number): number {
    const slice = SLICE_REQUESTS * this.typicalNano;
    const free = this.held - this.reserved - this.unapplied;
    return free - waitingNano < slice / 2 ? Math.max(waitingNano, slice) : 0;
  }
}

function sum(charges: Charge[]): number {
  return charges.reduce((s, c) => s + c.costNano, 0);
}

/**
 * Charges are applied once per invocation id, and the sizing is absolute, so a retried call cannot
 * charge twice. (Rate grants could be counted twice: they only err towards refusing.) A stub per
 * attempt: a stub belongs to the request that made it, calls run on behalf of many, and a stub
 * that failed stays broken.
 */
function callWithRetry(ledger: () => LedgerStub, accountId: string, req: LeaseSync): Promise<LeaseSyncResult> {
  return callFresh(ledger, (l) => l.lease(accountId, req), 3, 50);
}

const wallets = new Map<string, Wallet>();
/**
 * A wallet still giving its lease back after this long is taken as stuck. Its call is retried
 * for at most a few hundred milliseconds, so this is far beyond any call that is only slow.
 */
const CLOSE_STUCK_MS = 10_000;
/** Requests of each account in flight in this isolate on the per-request path. */
const direct = new Map<string, number>();
/** When each account's last request on the per-request path ended here (epoch ms). */
const recentlyDirect = new Map<string, number>();
/** Entries of `recentlyDirect` are swept once it holds this many. */
const RECENT_SWEEP_AT = 10_000;

/**
 * The account's wallet when it is worth using: a lease is open, or another request of the
 * account is in flight here, or one ended here within IDLE_CLOSE_MS (a client sending requests
 * one after another). A lone request is admitted by the ledger directly, and locks up no more
 * than its own worst case.
 */
export function busyWallet(accountId: string, ledger: () => LedgerStub): Wallet | null {
  let open = wallets.get(accountId);
  if (open?.closing) {
    if (Date.now() - open.closingSince < CLOSE_STUCK_MS) return null;
    // Its call never answered (the request it was made for may have been torn down with it): the
    // wallet is left behind, its lease expires on the ledger, and a new one may take its place.
    log.error("wallet.close_stuck", { component: "gateway", accountId, closingForMs: Date.now() - open.closingSince });
    wallets.delete(accountId);
    open = undefined;
  }
  if (open?.active) return open;
  const recent = Date.now() - (recentlyDirect.get(accountId) ?? -Infinity) < IDLE_CLOSE_MS;
  if ((direct.get(accountId) ?? 0) === 0 && !recent) return null;
  recentlyDirect.delete(accountId);
  const wallet = open ?? new Wallet(accountId, ledger, () => {
    if (wallets.get(accountId) === wallet) wallets.delete(accountId);
  });
  wallets.set(accountId, wallet);
  return wallet;
}

/**
 * Count a request admitted by the ledger directly; call the result when it has settled, or with
 * false when it was refused (a refused request does not make the account busy).
 */
export function directRequest(accountId: string): (served?: boolean) => void {
  direct.set(accountId, (direct.get(accountId) ?? 0) + 1);
  let done = false;
  return (served = true) => {
    if (done) return;
    done = true;
    const n = (direct.get(accountId) ?? 1) - 1;
    if (n <= 0) direct.delete(accountId);
    else direct.set(accountId, n);
    if (!served) return;
    const now = Date.now();
    if (recentlyDirect.size >= RECENT_SWEEP_AT) {
      for (const [id, at] of recentlyDirect) if (now - at >= IDLE_CLOSE_MS) recentlyDirect.delete(id);
      // Still full (that many accounts in the last moment): forget them all rather than sweep per request.
      if (recentlyDirect.size >= RECENT_SWEEP_AT) recentlyDirect.clear();
    }
    recentlyDirect.set(accountId, now);
  };
}
