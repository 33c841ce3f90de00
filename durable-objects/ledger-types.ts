/** The AccountLedger's RPC results (no runtime imports, so Node code can use them too). */

export type HoldResult =
  | { ok: true; holdNano: number; availableNano: number }
  | { ok: false; availableNano: number; requiredNano: number };

export interface SettleResult {
  /** Charged to the balance (never more than the hold). */
  chargedNano: number;
  /** Hold returned to the available balance. */
  releasedNano: number;
  /** True when this settle had already been applied (a replay). */
  replay: boolean;
}

export interface LedgerSummary {
  balanceNano: number;
  heldNano: number;
  availableNano: number;
  holds: number;
}

export interface LedgerAudit extends LedgerSummary {
  entriesBalanceNano: number;
  entriesHeldNano: number;
  holdsSumNano: number;
  ok: boolean;
}

export interface LedgerEntry {
  seq: number;
  kind: EntryKind;
  ref: string;
  amountNano: number;
  heldNano: number;
  at: number;
}

export type EntryKind = "credit" | "hold" | "settle" | "release" | "expire";

export interface QuotaResult {
  ok: boolean;
  used: number;
  limit: number;
}

/** A key's per-minute limits (0 = unlimited) and what this request counts against them. */
export interface RateRequest {
  keyId: string;
  rpm: number;
  tpm: number;
  /** Tokens counted at admission: the request's worst case, corrected when it settles. */
  tokens: number;
}

/** The key's standing in the current minute, for the x-ratelimit-* headers. */
export interface RateState {
  limitRequests: number;
  remainingRequests: number;
  limitTokens: number;
  remainingTokens: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export interface AdmitRequest {
  invocationId: string;
  rate: RateRequest;
  /** Paid chute: the worst-case cost to hold. */
  hold?: { amountNano: number; ttlMs: number };
  /** Free chute: the account's daily request quota. */
  freeQuota?: number;
}

export type AdmitResult =
  | { ok: true; rate: RateState; holdNano: number }
  | { ok: false; reason: "requests" | "tokens"; rate: RateState }
  | { ok: false; reason: "quota"; rate: RateState; quota: QuotaResult }
  | { ok: false; reason: "funds"; rate: RateState; availableNano: number; requiredNano: number };

/**
 * One call from an isolate's wallet (worker/billing/wallet.ts), which holds a slice of the
 * account's balance (a lease) and admits requests against it locally. Applies the charges of
 * requests that ended, then sizes the lease, then hands out or takes back rate-limit grants.
 */
export interface LeaseSync {
  leaseId: string;
  /** Settles of requests admitted on the lease, each applied once (by invocation id). */
  charges: { id: string; costNano: number }[];
  /** What the lease must hold after the charges: the worst cases of the isolate's requests. */
  mustNano: number;
  /** A slice on top for the requests to come (granted from at most half of what is available). */
  extraNano: number;
  /**
   * Give back what the lease holds beyond `mustNano` (the wallet is idle). Otherwise the lease
   * never shrinks in a sync: requests admitted while the call is under way rely on it.
   */
  shrink: boolean;
  ttlMs: number;
  /** Per key: unused grants given back, and new grants asked for (this minute). */
  rates: RateGrantRequest[];
}

export interface RateGrantRequest {
  keyId: string;
  rpm: number;
  tpm: number;
  /** The window (minute number) of the grants given back; ignored when it has passed. */
  returnWindow: number;
  returnRequests: number;
  returnTokens: number;
  wantRequests: number;
  wantTokens: number;
}

export interface RateGrant {
  keyId: string;
  window: number;
  grantedRequests: number;
  grantedTokens: number;
  /** The key's counts in this window after the grant (grants count as used). */
  usedRequests: number;
  usedTokens: number;
  resetMs: number;
}

export interface LeaseSyncResult {
  /** Orders the answers to one account's calls (a wallet's calls may overlap and return out of order). */
  version: number;
  /** What the lease holds now. */
  heldNano: number;
  /** The account's available balance outside every hold and lease. */
  availableNano: number;
  /** What each charge cost (never more than the lease held; a replay returns the first result). */
  charged: Record<string, number>;
  rates: RateGrant[];
}
