import type { LeaseSync, RateGrant, RateRequest, RateState } from "./ledger-types.ts";

/** Rate limits count requests and tokens per key in one-minute windows. */
const RATE_WINDOW_MS = 60_000;

/** The minute `now` falls in, and how long until it ends. */
export function rateWindow(now: number): { window: number; resetMs: number } {
  const window = Math.floor(now / RATE_WINDOW_MS);
  return { window, resetMs: (window + 1) * RATE_WINDOW_MS - now };
}

/**
 * An account's per-key rate-limit counts (the ledger's `rates` table, one row per key and
 * minute): requests admitted, their token worst cases (corrected when they settle), and what
 * wallets were granted. Runs inside the ledger's transactions.
 */
export class RateWindows {
  constructor(private readonly sql: SqlStorage) {}

  /** What the key has used in the minute `window` (admitted requests, their token worst cases, wallet grants). */
  used(keyId: string, window: number): { requests: number; tokens: number } {
    return this.sql
      .exec<{ requests: number; tokens: number }>("SELECT requests, tokens FROM rates WHERE key_id = ? AND window = ?", keyId, window)
      .toArray()[0] ?? { requests: 0, tokens: 0 };
  }

  /** Count requests and tokens against the key's minute `window`; minutes before the previous one are dropped. */
  count(keyId: string, window: number, requests: number, tokens: number): void {
    if (requests > 0 || tokens > 0) {
      this.sql.exec(
        `INSERT INTO rates (key_id, window, requests, tokens) VALUES (?, ?, ?, ?)
         ON CONFLICT (key_id, window) DO UPDATE SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens`,
        keyId,
        window,
        requests,
        tokens,
      );
    }
    this.sql.exec("DELETE FROM rates WHERE window < ?", window - 1);
  }

  /** Take back `tokens` counted against the key's minute `window` (a worst case that was not used). */
  uncountTokens(keyId: string, window: number, tokens: number): void {
    this.sql.exec("UPDATE rates SET tokens = max(0, tokens - ?) WHERE key_id = ? AND window = ?", tokens, keyId, window);
  }

  /** Give back a wallet's unused grant (same minute only), then grant what it asks within the key's limits. */
  grant(r: LeaseSync["rates"][number], now: number): RateGrant {
    const { window, resetMs } = rateWindow(now);
    if (r.returnWindow === window && (r.returnRequests > 0 || r.returnTokens > 0)) {
      this.sql.exec(
        "UPDATE rates SET requests = max(0, requests - ?), tokens = max(0, tokens - ?) WHERE key_id = ? AND window = ?",
        r.returnRequests,
        r.returnTokens,
        r.keyId,
        window,
      );
    }
    const used = this.used(r.keyId, window);
    const grantedRequests = r.rpm > 0 ? Math.min(r.wantRequests, Math.max(0, r.rpm - used.requests)) : r.wantRequests;
    const grantedTokens = r.tpm > 0 ? Math.min(r.wantTokens, Math.max(0, r.tpm - used.tokens)) : r.wantTokens;
    this.count(r.keyId, window, grantedRequests, grantedTokens);
    return {
      keyId: r.keyId,
      window,
      grantedRequests,
      grantedTokens,
      usedRequests: used.requests + grantedRequests,
      usedTokens: used.tokens + grantedTokens,
      resetMs,
    };
  }
}

/** The key's standing, for the x-ratelimit-* headers. */
export function rateState(r: RateRequest, requests: number, tokens: number, resetMs: number): RateState {
  return {
    limitRequests: r.rpm,
    remainingRequests: r.rpm > 0 ? Math.max(0, r.rpm - requests) : Number.MAX_SAFE_INTEGER,
    limitTokens: r.tpm,
    remainingTokens: r.tpm > 0 ? Math.max(0, r.tpm - tokens) : Number.MAX_SAFE_INTEGER,
    resetMs,
  };
}
