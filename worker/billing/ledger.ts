import { drizzle } from "drizzle-orm/d1";
import type { AccountLedger } from "../../durable-objects/account-ledger.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { credits } from "../db/schema.ts";
import { numberVar } from "../env.ts";
import { ApiError } from "../errors.ts";
import { log } from "../log.ts";
import { stubByName } from "../runtime/object-ids.ts";
import { callFresh } from "../runtime/stub-retry.ts";
import type { AdmitResult, RateState } from "../../durable-objects/ledger-types.ts";
import { busyWallet, directRequest, type WalletAdmit } from "./wallet.ts";
import type { ApiKeyRecord } from "../catalog/types.ts";
import { completionTokenBound, isFree, promptTokenBound, usdString, worstCaseNano } from "./pricing.ts";
import type { JobSpec } from "../../protocol/index.ts";

export function ledgerOf(env: Env, accountId: string): DurableObjectStub<AccountLedger> {
  return stubByName(env.ACCOUNT_LEDGER, accountId);
}

/** The money side of one invocation: a hold placed before dispatch, settled once at the end. */
export interface Meter {
  holdNano: number;
  /** The key's rate-limit standing, as OpenAI's x-ratelimit-* headers. */
  rateHeaders: Record<string, string>;
  /**
   * Charge `costNano` (capped at the hold) and release the rest; `usedTokens` replaces the
   * worst case counted against the key's tokens-per-minute. Idempotent; retried on failure.
   */
  settle(costNano: number, usedTokens: number): Promise<number>;
}

const DEFAULT_HOLD_TTL_MS = 60 * 60_000;
const DEFAULT_FREE_DAILY_REQUESTS = 1000;
const DEFAULT_RPM = 600;
const DEFAULT_TPM = 2_000_000;

/**
 * Admit a request on the account's ledger in one call: the key's per-minute request and token
 * limits (429), then the worst-case cost held (402 when the available balance does not cover
 * it) or, on a free chute, the account's daily quota (429).
 */
export async function openMeter(
  env: Env,
  key: ApiKeyRecord,
  chute: ChuteRecord,
  spec: JobSpec,
  invocationId: string,
  waitUntil: (p: Promise<unknown>) => void,
): Promise<Meter> {
  const free = isFree(chute);
  const amount = free ? 0 : worstCaseNano(chute, spec);
  const tokens = promptTokenBound(spec) + completionTokenBound(spec);
  const rate = {
    keyId: key.id,
    rpm: key.rpmLimit ?? limitVar(env.RATE_LIMIT_RPM, DEFAULT_RPM),
    tpm: key.tpmLimit ?? limitVar(env.RATE_LIMIT_TPM, DEFAULT_TPM),
    tokens,
  };
  const ttlMs = numberVar(env.HOLD_TTL_MS, DEFAULT_HOLD_TTL_MS);
  // Busy accounts are admitted from this isolate's slice of their balance (no round trip).
  const wallet = free ? null : busyWallet(key.accountId, () => ledgerOf(env, key.accountId));
  let admitted: AdmitResult | WalletAdmit;
  let direct: ((served?: boolean) => void) | null = null;
  if (wallet) {
    admitted = await wallet.admit({ invocationId, amountNano: amount, rate, ttlMs });
    // A refused request may be the last one: its lifetime covers giving the slice back.
    if (!admitted.ok) waitUntil(wallet.quiet());
  } else {
    direct = directRequest(key.accountId);
    const ledger = ledgerOf(env, key.accountId);
    try {
      admitted = await ledger.admit(key.accountId, {
        invocationId,
        rate,
        ...(free ? { freeQuota: numberVar(env.FREE_DAILY_REQUESTS, DEFAULT_FREE_DAILY_REQUESTS) } : { hold: { amountNano: amount, ttlMs } }),
      });
    } catch (err) {
      direct(false);
      throw err;
    }
    if (!admitted.ok) direct(false);
  }
  const rateHeaders = rateLimitHeaders(admitted.rate);
  if (!admitted.ok) {
    const retryAfter = { ...rateHeaders, "retry-after": String(Math.max(1, Math.ceil(admitted.rate.resetMs / 1000))) };
    switch (admitted.reason) {
      case "requests":
        throw new ApiError("rate_limit_exceeded", `Rate limit reached: ${rate.rpm} requests per minute for this API key. Try again in ${retryAfter["retry-after"]} s.`, null, retryAfter);
      case "tokens":
        throw new ApiError(
          "rate_limit_exceeded",
          tokens > rate.tpm
            ? `This request may use up to ${tokens} tokens, more than this API key's limit of ${rate.tpm} tokens per minute. Lower max_tokens.`
            : `Rate limit reached: ${rate.tpm} tokens per minute for this API key (this request counts up to ${tokens}). Try again in ${retryAfter["retry-after"]} s.`,
          null,
          retryAfter,
        );
      case "quota":
        throw new ApiError(
          "rate_limit_exceeded",
          `You have used today's ${admitted.quota.limit} free requests; the quota resets at 00:00 UTC. Paid models are not limited by it.`,
          null,
          { ...rateHeaders, "retry-after": String(secondsToUtcMidnight()) },
        );
      case "funds":
        throw new ApiError(
          "insufficient_quota",
          `Insufficient balance: this request can cost up to $${usdString(admitted.requiredNano)} and $${usdString(admitted.availableNano)} is available. Add credit, or lower max_tokens.`,
        );
    }
  }
  if ("settle" in admitted) {
    const { settle } = admitted;
    return {
      holdNano: amount,
      rateHeaders,
      settle: (costNano, usedTokens) => {
        const charged = settle(costNano, usedTokens);
        // This request's lifetime also covers giving the slice back when it is the last one.
        waitUntil(charged.then(() => wallet!.quiet()));
        return charged;
      },
    };
  }
  let settled: Promise<number> | null = null;
  const holdNano = "holdNano" in admitted ? admitted.holdNano : 0;
  return {
    holdNano,
    rateHeaders,
    settle: (costNano, usedTokens) =>
      (settled ??= (free ? Promise.resolve(0) : settleWithRetry(() => ledgerOf(env, key.accountId), key.accountId, invocationId, costNano, usedTokens)).finally(() => direct?.())),
  };
}

/** OpenAI's rate-limit headers. Unlimited (0) limits are left out. */
function rateLimitHeaders(r: RateState): Record<string, string> {
  const out: Record<string, string> = {};
  const reset = durationString(r.resetMs);
  if (r.limitRequests > 0) {
    out["x-ratelimit-limit-requests"] = String(r.limitRequests);
    out["x-ratelimit-remaining-requests"] = String(r.remainingRequests);
    out["x-ratelimit-reset-requests"] = reset;
  }
  if (r.limitTokens > 0) {
    out["x-ratelimit-limit-tokens"] = String(r.limitTokens);
    out["x-ratelimit-remaining-tokens"] = String(r.remainingTokens);
    out["x-ratelimit-reset-tokens"] = reset;
  }
  return out;
}

/** "850ms", "12.5s", as OpenAI writes reset times. */
function durationString(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  return `${Math.round(ms / 100) / 10}s`;
}

/** A limit from a var: a non-negative integer, 0 meaning unlimited. */
function limitVar(value: string | undefined, fallback: number): number {
  const n = value === undefined ? NaN : Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : fallback;
}

/**
 * Settles are idempotent by invocation id, so retrying cannot double-charge. If every attempt
 * fails the hold expires and is released (the account is not charged).
 */
async function settleWithRetry(ledger: () => DurableObjectStub<AccountLedger>, accountId: string, id: string, costNano: number, usedTokens: number): Promise<number> {
  try {
    return (await callFresh(ledger, (l) => l.settle(accountId, id, costNano, usedTokens), 3, 100)).chargedNano;
  } catch (err) {
    log.error("ledger.settle_failed", { component: "gateway", id, costNano, error: String(err) });
    return 0;
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
