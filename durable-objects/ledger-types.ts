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
