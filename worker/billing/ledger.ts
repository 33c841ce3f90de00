import { drizzle } from "drizzle-orm/d1";
import type { AccountLedger } from "../../durable-objects/account-ledger.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { credits } from "../db/schema.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { log } from "../log.ts";
import { isFree, usdString, worstCaseNano } from "./pricing.ts";
import type { JobSpec } from "../../protocol/index.ts";

export function ledgerOf(env: Env, accountId: string): DurableObjectStub<AccountLedger> {
  return env.ACCOUNT_LEDGER.get(env.ACCOUNT_LEDGER.idFromName(accountId));
}

/** The money side of one invocation: a hold placed before dispatch, settled once at the end. */
export interface Meter {
  holdNano: number;
  /** Charge `costNano` (capped at the hold) and release the rest. Idempotent; retried on failure. */
  settle(costNano: number): Promise<number>;
}

const DEFAULT_HOLD_TTL_MS = 60 * 60_000;
const DEFAULT_FREE_DAILY_REQUESTS = 1000;

/**
 * Reserve the request's worst-case cost on the account's ledger (402 when the available balance
 * does not cover it), or, on a free chute, count it against the account's daily quota (429).
 */
export async function openMeter(env: Env, accountId: string, chute: ChuteRecord, spec: JobSpec, invocationId: string): Promise<Meter> {
  const ledger = ledgerOf(env, accountId);
  if (isFree(chute)) {
    const quota = await ledger.useFreeQuota(accountId, numberVar(env.FREE_DAILY_REQUESTS, DEFAULT_FREE_DAILY_REQUESTS));
    if (!quota.ok) {
      throw new ApiError(
        "rate_limit_exceeded",
        `You have used today's ${quota.limit} free requests; the quota resets at 00:00 UTC. Paid models are not limited by it.`,
        null,
        { "retry-after": String(secondsToUtcMidnight()) },
      );
    }
    return { holdNano: 0, settle: async () => 0 };
  }
  const amount = worstCaseNano(chute, spec);
  const held = await ledger.hold(accountId, invocationId, amount, numberVar(env.HOLD_TTL_MS, DEFAULT_HOLD_TTL_MS));
  if (!held.ok) {
    throw new ApiError(
      "insufficient_quota",
      `Insufficient balance: this request can cost up to $${usdString(held.requiredNano)} and $${usdString(held.availableNano)} is available. Add credit, or lower max_tokens.`,
    );
  }
  let settled: Promise<number> | null = null;
  return {
    holdNano: amount,
    settle: (costNano) => (settled ??= settleWithRetry(ledger, accountId, invocationId, costNano)),
  };
}

async function settleWithRetry(ledger: DurableObjectStub<AccountLedger>, accountId: string, id: string, costNano: number): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await ledger.settle(accountId, id, costNano)).chargedNano;
    } catch (err) {
      // Settles are idempotent by invocation id, so retrying cannot double-charge. If every
      // attempt fails the hold expires and is released (the account is not charged).
      if (attempt >= 3) {
        log.error("ledger.settle_failed", { component: "gateway", id, costNano, error: String(err) });
        return 0;
      }
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

export interface CreditRequest {
  accountId: string;
  /** Idempotency key: the same reference is applied once, whatever the amount sent again. */
  reference: string;
  amountNano: number;
  source: "seed" | "admin" | "payment";
}

/**
 * Credit an account: record the credit in D1 (once per reference), then apply it to the
 * account's ledger (once per reference). If the second step fails, the ledger pulls the credit
 * from D1 before it next refuses a hold. A reference already used for another account or
 * amount is refused. `applied` is true for the one call that recorded the credit (the reference
 * is D1's primary key, so concurrent calls race there and exactly one wins).
 */
export async function applyCredit(env: Env, req: CreditRequest): Promise<{ applied: boolean; balanceNano: number }> {
  if (!Number.isSafeInteger(req.amountNano) || req.amountNano <= 0) {
    throw new ApiError("invalid_request", "The credit amount must be a positive amount of USD.", "amount");
  }
  const db = drizzle(env.DB);
  const recorded = await db.insert(credits).values(req).onConflictDoNothing().returning({ reference: credits.reference });
  const row = await env.DB.prepare("SELECT account_id, amount_nano FROM credits WHERE reference = ?")
    .bind(req.reference)
    .first<{ account_id: string; amount_nano: number }>();
  if (!row || row.account_id !== req.accountId || row.amount_nano !== req.amountNano) {
    throw new ApiError("conflict", `Reference '${req.reference}' was already used for a different credit.`, "reference");
  }
  const { balanceNano } = await ledgerOf(env, req.accountId).credit(req.accountId, req.reference, req.amountNano);
  return { applied: recorded.length > 0, balanceNano };
}

function secondsToUtcMidnight(): number {
  const now = Date.now();
  const midnight = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), new Date(now).getUTCDate() + 1);
  return Math.ceil((midnight - now) / 1000);
}
