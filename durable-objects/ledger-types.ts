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
