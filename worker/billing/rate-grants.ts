import type { LeaseSync, LeaseSyncResult, RateRequest, RateState } from "../../durable-objects/ledger-types.ts";

/**
 * A wallet's slices of its keys' per-minute rate limits: requests and tokens the ledger granted
 * to this isolate, spent here without a call. Each ledger call asks for what waiting requests
 * need plus a stock sized by recent use, and gives back what is held beyond that stock.
 */

const RATE_WINDOW_MS = 60_000;
/**
 * Rate grants kept here beyond what waiting requests need: about twice what the key used here in
 * a recent RATE_STOCK_MS, and never more than this fraction of its per-minute limit. Anything
 * beyond that goes back with the next call, so grants idle in an isolate cannot crowd out the
 * key's requests elsewhere.
 */
const RATE_STOCK_MS = 500;
const RATE_SLICE = 1 / 20;

interface KeyGrant {
  rpm: number;
  tpm: number;
  window: number;
  /** Granted by the ledger and not yet used by a request here. */
  requests: number;
  tokens: number;
  /** The ledger's counts after its last grant (including what it granted here). */
  usedRequests: number;
  usedTokens: number;
  /** When the window resets, as epoch ms. */
  resetAt: number;
  /** Requests and tokens taken here in the current and the previous RATE_STOCK_MS period. */
  period: number;
  takenRequests: [number, number];
  takenTokens: [number, number];
}

/** A request checked against its key's grant: the key's standing, and the limit that refuses it, if any. */
export interface RateCheck {
  readonly grant: KeyGrant;
  readonly rate: RateRequest;
  readonly state: RateState;
  readonly refused: "requests" | "tokens" | null;
}

/** What a request took from its key's grant, to correct its tokens when it settles. */
export interface RateTaken {
  window: number;
  tokens: number;
}

export class RateGrants {
  private readonly grants = new Map<string, KeyGrant>();

  /** Whether the key's grant covers the request (nothing is taken yet). */
  check(rate: RateRequest, now: number): RateCheck {
    const grant = this.grantOf(rate, now);
    const state = rateState(rate, grant, now);
    if (rate.rpm > 0 && grant.requests < 1) return { grant, rate, state, refused: "requests" };
    if (rate.tpm > 0 && grant.tokens < rate.tokens) return { grant, rate, state, refused: "tokens" };
    return { grant, rate, state, refused: null };
  }

  /** Take a checked request's request and worst-case tokens from its key's grant. */
  take(check: RateCheck, now: number): { taken: RateTaken; state: RateState } {
    const { grant, rate } = check;
    if (rate.rpm > 0) grant.requests--;
    if (rate.tpm > 0) grant.tokens -= rate.tokens;
    rollPeriod(grant, now);
    grant.takenRequests[0] += 1;
    grant.takenTokens[0] += rate.tokens;
    return { taken: { window: grant.window, tokens: rate.tpm > 0 ? rate.tokens : 0 }, state: rateState(rate, grant, now) };
  }

  /** The request settled: the worst case counted against the key's tokens is corrected to what was used. */
  settle(keyId: string, taken: RateTaken, usedTokens: number): void {
    const grant = this.grants.get(keyId);
    if (grant && grant.window === taken.window && taken.tokens > 0) grant.tokens += Math.max(0, taken.tokens - usedTokens);
  }

  clear(): void {
    this.grants.clear();
  }

  /**
   * Per key: what `waiting` requests need plus a stock sized by recent use, asked for when the
   * stock runs low; what is held beyond the stock (everything, when closing) is given back.
   * What is given back leaves the local grant before the call, so nothing is spent twice.
   */
  requests(waiting: readonly RateRequest[], closing: boolean, now: number): LeaseSync["rates"] {
    const out: LeaseSync["rates"] = [];
    for (const [keyId, g] of this.grants) {
      rollPeriod(g, now);
      const mine = waiting.filter((w) => w.keyId === keyId);
      const waitingTokens = mine.reduce((s, w) => s + w.tokens, 0);
      const stock = (taken: [number, number], limit: number) =>
        closing ? 0 : Math.min(Math.ceil(limit * RATE_SLICE), 2 * Math.max(taken[0], taken[1]) + 1);
      const stockRequests = stock(g.takenRequests, g.rpm);
      const stockTokens = stock(g.takenTokens, g.tpm);
      const returnRequests = g.rpm > 0 ? Math.max(0, g.requests - stockRequests) : 0;
      const returnTokens = g.tpm > 0 ? Math.max(0, g.tokens - stockTokens) : 0;
      g.requests -= returnRequests;
      g.tokens -= returnTokens;
      const want = (need: number, held: number, stockOf: number) =>
        need > 0 || held < stockOf / 2 ? need + Math.max(0, stockOf - held) : 0;
      out.push({
        keyId,
        rpm: g.rpm,
        tpm: g.tpm,
        returnWindow: g.window,
        returnRequests,
        returnTokens,
        wantRequests: closing || g.rpm === 0 ? 0 : want(mine.length, g.requests, stockRequests),
        wantTokens: closing || g.tpm === 0 ? 0 : want(waitingTokens, g.tokens, stockTokens),
      });
    }
    return out;
  }

  /** What the ledger granted in answer to a call. */
  apply(granted: LeaseSyncResult["rates"], now: number): void {
    for (const g of granted) {
      const mine = this.grants.get(g.keyId);
      if (!mine) continue;
      if (mine.window !== g.window) {
        mine.window = g.window;
        mine.requests = 0;
        mine.tokens = 0;
      }
      mine.requests += g.grantedRequests;
      mine.tokens += g.grantedTokens;
      mine.usedRequests = g.usedRequests;
      mine.usedTokens = g.usedTokens;
      mine.resetAt = now + g.resetMs;
    }
  }

  /** The key's grant for this minute (an empty one when the minute changed). */
  private grantOf(rate: RateRequest, now: number): KeyGrant {
    const window = Math.floor(now / RATE_WINDOW_MS);
    const prev = this.grants.get(rate.keyId);
    let g = prev;
    if (!g || g.window !== window) {
      g = {
        rpm: rate.rpm,
        tpm: rate.tpm,
        window,
        requests: 0,
        tokens: 0,
        usedRequests: 0,
        usedTokens: 0,
        resetAt: (window + 1) * RATE_WINDOW_MS,
        period: prev?.period ?? 0,
        takenRequests: prev?.takenRequests ?? [0, 0],
        takenTokens: prev?.takenTokens ?? [0, 0],
      };
      this.grants.set(rate.keyId, g);
    }
    g.rpm = rate.rpm;
    g.tpm = rate.tpm;
    return g;
  }
}

/** Start a new RATE_STOCK_MS period when the current one is over (the counts shift by one). */
function rollPeriod(g: KeyGrant, now: number): void {
  const period = Math.floor(now / RATE_STOCK_MS);
  if (period === g.period) return;
  g.takenRequests = [0, period === g.period + 1 ? g.takenRequests[0] : 0];
  g.takenTokens = [0, period === g.period + 1 ? g.takenTokens[0] : 0];
  g.period = period;
}

/** The key's standing as the ledger last counted it, less what this wallet holds unused. */
function rateState(r: RateRequest, g: KeyGrant, now: number): RateState {
  const usedRequests = g.usedRequests - g.requests;
  const usedTokens = g.usedTokens - g.tokens;
  return {
    limitRequests: r.rpm,
    remainingRequests: r.rpm > 0 ? Math.max(0, r.rpm - usedRequests) : Number.MAX_SAFE_INTEGER,
    limitTokens: r.tpm,
    remainingTokens: r.tpm > 0 ? Math.max(0, r.tpm - usedTokens) : Number.MAX_SAFE_INTEGER,
    resetMs: Math.max(0, g.resetAt - now),
  };
}
