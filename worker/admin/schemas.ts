import { z } from "zod";
import { SCOPES } from "../accounts/keys.ts";
import { parseUsd } from "../billing/pricing.ts";

/** Request bodies of the operator API. Strict: a misspelt field is a 400, not silently ignored. */

const USD_HINT = 'a USD decimal with at most 9 decimal places, e.g. "12.50"';

/** A USD amount (decimal string or number) in integer nano-USD, parsed exactly (no floats). */
const usdNano = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const nano = parseUsd(v);
  if (nano === null || !Number.isSafeInteger(nano)) {
    ctx.issues.push({ code: "custom", message: nano === null ? `expected ${USD_HINT}` : "amount too large", input: v });
    return z.NEVER;
  }
  return nano;
});
const positiveUsdNano = usdNano.refine((n) => n > 0, "must be more than $0");

/** Unix seconds or an ISO 8601 date-time, in epoch milliseconds; must be in the future. */
const futureTimeMs = z
  .union([z.int().positive().transform((s) => s * 1000), z.iso.datetime({ offset: true }).transform((s) => Date.parse(s))])
  .refine((ms) => ms > Date.now(), "must be in the future");

export const CreateAccountBody = z.strictObject({
  name: z.string().trim().min(1).max(200),
  credit_usd: positiveUsdNano.optional(),
});

export const CreditBody = z.strictObject({
  usd: positiveUsdNano,
  /** The operator's idempotency key: the same reference is credited once. */
  reference: z
    .string()
    .min(1)
    .max(200)
    .regex(/^[\w.:@/-]+$/, "letters, digits and . _ : @ / - only"),
});

export const CreateKeyBody = z.strictObject({
  account_id: z.string().min(1),
  name: z.string().max(200).optional(),
  scopes: z.array(z.enum(SCOPES)).min(1).optional(),
  expires_at: futureTimeMs.nullish(),
});

/** USD per million tokens; `cached_prompt_usd_per_m: null` bills cached prompt tokens at the prompt price. */
export const SetPriceBody = z
  .strictObject({
    prompt_usd_per_m: usdNano.optional(),
    completion_usd_per_m: usdNano.optional(),
    cached_prompt_usd_per_m: usdNano.nullable().optional(),
  })
  .refine((b) => Object.keys(b).length > 0, "give at least one of prompt_usd_per_m, completion_usd_per_m, cached_prompt_usd_per_m");
