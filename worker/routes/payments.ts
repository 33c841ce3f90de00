import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { applyCredit } from "../billing/ledger.ts";
import { accounts, credits, paymentEvents } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { parseBody } from "../http/json.ts";
import { log } from "../log.ts";

/**
 * The card processor's webhook. Each delivery is signed Stripe-style:
 *
 *   sluice-signature: t=<unix seconds>,v1=<hex HMAC-SHA256("<t>.<raw body>", PAYMENT_WEBHOOK_SECRET)>
 *
 * (several v1 entries are accepted, as during a secret rotation). The signature is checked over
 * the raw bytes before anything is parsed, with WebCrypto's constant-time HMAC verify, and the
 * timestamp must be within five minutes of now, so a captured delivery cannot be replayed later.
 *
 * What the processor expects back: it retries every non-2xx delivery (with backoff, for days),
 * so the answer says whether a retry could help.
 * - 2xx once the event is durably recorded in `payment_events` and, for `payment.succeeded`,
 *   the credit is recorded (D1 `credits`, reference `payment:<event id>`, applied once by the
 *   account's ledger). A replayed event id is acknowledged again (`duplicate: true`) and credits
 *   nothing more; the credit step is still re-run (it is idempotent), so a delivery that failed
 *   between recording and crediting is completed by the processor's retry.
 * - 2xx also for event types we do not act on (recorded, acknowledged), and for a payment to an
 *   account we do not know: a retry cannot fix that, and refusing would only get the endpoint
 *   disabled. It is recorded with its amount and logged as an error for the operator to
 *   reconcile (credit it with `npm run admin -- accounts credit`, or refund it).
 * - 400 for a bad signature, a stale or future timestamp, or a malformed payment event; 5xx when
 *   D1 or the ledger fails. Both are retried by the processor, which is what we want: a
 *   rotated secret or a fixed bug then recovers the payment within the retry window.
 */

const TOLERANCE_S = 5 * 60;
const SIGNATURE_HEADER = "sluice-signature";
/** 1 US cent in nano-USD. */
const NANO_PER_CENT = 10_000_000;
/** Largest single payment accepted: keeps nano-USD a safe integer ($9M). */
const MAX_CENTS = 900_000_000;

const PaymentEvent = z.looseObject({
  id: z.string().min(1).max(255),
  type: z.string().min(1).max(100),
  created: z.int(),
  data: z.looseObject({}),
});

const PaymentSucceededData = z.looseObject({
  account_id: z.string().min(1),
  amount_usd_cents: z.int().positive().max(MAX_CENTS),
  currency: z.literal("usd", { error: "only USD payments are supported" }),
});

const stringOrNull = (v: unknown): string | null => (typeof v === "string" ? v : null);

function badSignature(message: string): ApiError {
  return new ApiError("invalid_request", message, SIGNATURE_HEADER);
}

function hexBytes(hex: string): Uint8Array<ArrayBuffer> | null {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Verify the signature header over the raw body; returns the signed timestamp (epoch seconds). */
async function verifySignature(secret: string, header: string | undefined, body: Uint8Array<ArrayBuffer>): Promise<number> {
  if (!header) throw badSignature(`Missing the ${SIGNATURE_HEADER} header.`);
  let timestamp: number | null = null;
  const signatures: Uint8Array<ArrayBuffer>[] = [];
  for (const part of header.split(",")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    const [k, v] = [part.slice(0, at).trim(), part.slice(at + 1).trim()];
    if (k === "t" && /^\d{1,12}$/.test(v)) timestamp = Number(v);
    else if (k === "v1") {
      const sig = hexBytes(v);
      if (sig?.length === 32) signatures.push(sig);
    }
  }
  if (timestamp === null || signatures.length === 0) {
    throw badSignature(`Malformed ${SIGNATURE_HEADER} header: expected 't=<unix seconds>,v1=<hex HMAC-SHA256>'.`);
  }
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  const prefix = new TextEncoder().encode(`${timestamp}.`);
  const signed = new Uint8Array(prefix.length + body.length);
  signed.set(prefix);
  signed.set(body, prefix.length);
  let valid = false;
  for (const sig of signatures) valid = (await crypto.subtle.verify("HMAC", key, sig, signed)) || valid;
  if (!valid) throw badSignature("The webhook signature does not match the body.");
  const skew = Math.floor(Date.now() / 1000) - timestamp;
  if (skew > TOLERANCE_S) throw badSignature(`The webhook timestamp is ${skew} s old (at most ${TOLERANCE_S} s accepted).`);
  if (skew < -TOLERANCE_S) throw badSignature(`The webhook timestamp is ${-skew} s in the future (at most ${TOLERANCE_S} s accepted).`);
  return timestamp;
}

export const paymentRoutes = new Hono<AppEnv>().post("/webhook", async (c) => {
  const secret = c.env.PAYMENT_WEBHOOK_SECRET;
  if (!secret) {
    // 503 (no dedicated "not configured" code): the processor keeps retrying until it is set.
    throw new ApiError("not_configured", "Payments are disabled: set the PAYMENT_WEBHOOK_SECRET secret to enable the webhook.");
  }
  const raw = new Uint8Array(await c.req.arrayBuffer());
  const signedAt = await verifySignature(secret, c.req.header(SIGNATURE_HEADER), raw);

  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(raw));
  } catch {
    throw new ApiError("invalid_json", "The webhook body is not valid JSON.");
  }
  const event = parseBody(PaymentEvent, json);
  const payment = event.type === "payment.succeeded" ? parseBody(PaymentSucceededData, event.data) : null;
  const amountNano = payment ? payment.amount_usd_cents * NANO_PER_CENT : null;
  const db = drizzle(c.env.DB);
  const account = payment ? await db.select({ id: accounts.id }).from(accounts).where(eq(accounts.id, payment.account_id)).get() : undefined;

  // The event and its credit are recorded together, once per event id (one D1 transaction;
  // concurrent deliveries of one event race on the primary keys, and one wins both).
  const credit = payment && amountNano !== null && account
    ? ({ accountId: account.id, reference: `payment:${event.id}`, amountNano, source: "payment" } as const)
    : null;
  const recordEvent = db
    .insert(paymentEvents)
    .values({ id: event.id, type: event.type, accountId: payment?.account_id ?? stringOrNull(event.data.account_id), amountNano, signedAt })
    .onConflictDoNothing()
    .returning({ id: paymentEvents.id });
  const [recorded] = credit ? await db.batch([recordEvent, db.insert(credits).values(credit).onConflictDoNothing()]) : [await recordEvent];
  const duplicate = recorded.length === 0;
  // Then the ledger applies it (once per reference). Re-run for duplicates too: a delivery that
  // failed after recording is completed by the processor's retry.
  if (credit) await applyCredit(c.env, credit);
  const credited = credit !== null && !duplicate;
  const fields = { component: "payments", requestId: c.get("requestId"), eventId: event.id, type: event.type, duplicate, credited, amountNano };
  if (payment && !account) log.error("payment.unknown_account", { ...fields, accountId: payment.account_id });
  else log.info("payment.event", { ...fields, accountId: payment?.account_id ?? null });

  if (duplicate) return c.json({ received: true, duplicate: true });
  return c.json({ received: true, duplicate: false, credited, ...(payment && !account ? { reason: "unknown_account" } : {}) });
});
