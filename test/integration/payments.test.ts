import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CardProcessorDouble, type PaymentEvent } from "../support/card-processor-double.ts";
import { startGateway, TEST_SECRETS, type Gateway } from "../support/gateway.ts";

/**
 * The card processor's webhook: signed deliveries credit an account once per event, whatever
 * the processor replays or delivers concurrently; unsigned, tampered or stale ones are refused.
 * The processor is a test double that signs with the shared secret, as the real one does.
 */
let gw: Gateway;
let processor: CardProcessorDouble;

beforeAll(async () => {
  gw = await startGateway();
  processor = new CardProcessorDouble(`${gw.baseURL}/payments/webhook`, TEST_SECRETS.PAYMENT_WEBHOOK_SECRET);
});
afterAll(() => gw?.close());

const NANO_PER_CENT = 10_000_000;

async function admin(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("payments-test")
    .setAudience("sluice-admin")
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(TEST_SECRETS.ADMIN_JWT_SECRET));
  const res = await fetch(`${gw.baseURL}/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  expect(res.ok).toBe(true);
  return (await res.json()) as Record<string, unknown>;
}

/** A new account with no credit. */
async function newAccount(): Promise<string> {
  return (await admin("POST", "/accounts", { name: "payer" })).account_id as string;
}

/** The ledger's balance (through the admin API) and what D1 holds for the account. */
async function state(accountId: string) {
  const account = await admin("GET", `/accounts/${accountId}`);
  const credits = await gw.db.prepare("SELECT reference, amount_nano, source FROM credits WHERE account_id = ?").bind(accountId).all();
  const events = await gw.db.prepare("SELECT id, type, amount_nano FROM payment_events WHERE account_id = ?").bind(accountId).all();
  expect(account.audit).toMatchObject({ ok: true });
  return { balanceNano: account.balance_nano as number, credits: credits.results, events: events.results };
}

describe("payment webhook", () => {
  it("credits a signed payment once, and a replay of the same event id credits nothing", async () => {
    const accountId = await newAccount();
    const event = processor.paymentSucceeded(accountId, 1999);
    const first = await processor.deliver(event);
    expect(first).toEqual({ status: 200, body: { received: true, duplicate: false, credited: true } });
    const replay = await processor.deliver(event);
    expect(replay).toEqual({ status: 200, body: { received: true, duplicate: true } });

    const s = await state(accountId);
    expect(s.balanceNano).toBe(1999 * NANO_PER_CENT);
    expect(s.credits).toEqual([{ reference: `payment:${event.id}`, amount_nano: 1999 * NANO_PER_CENT, source: "payment" }]);
    expect(s.events).toEqual([{ id: event.id, type: "payment.succeeded", amount_nano: 1999 * NANO_PER_CENT }]);
  });

  it("refuses a wrong secret, a tampered body, a stale or future timestamp, a missing or malformed header (400)", async () => {
    const accountId = await newAccount();
    const event = processor.paymentSucceeded(accountId, 500);
    const now = Math.floor(Date.now() / 1000);
    const refusals: [string, Promise<{ status: number; body: Record<string, unknown> }>, RegExp][] = [
      ["wrong secret", processor.deliver(event, { secret: "not-the-shared-secret" }), /does not match/],
      ["tampered body", processor.deliver(event, { tamperedBody: JSON.stringify({ ...event, data: { ...event.data, amount_usd_cents: 500_000 } }) }), /does not match/],
      ["stale timestamp", processor.deliver(event, { timestamp: now - 6 * 60 }), /old/],
      ["future timestamp", processor.deliver(event, { timestamp: now + 6 * 60 }), /future/],
      ["no header", processor.deliver(event, { signatureHeader: null }), /Missing/],
      ["malformed header", processor.deliver(event, { signatureHeader: "v1=abc" }), /Malformed/],
    ];
    for (const [what, delivery, message] of refusals) {
      const res = await delivery;
      expect(res.status, what).toBe(400);
      expect(res.body.error, what).toMatchObject({ type: "invalid_request_error", param: "sluice-signature", message: expect.stringMatching(message) });
    }
    expect(await state(accountId)).toEqual({ balanceNano: 0, credits: [], events: [] });
  });

  it("credits once when the processor delivers the same event 10 times at once", async () => {
    const accountId = await newAccount();
    const event = processor.paymentSucceeded(accountId, 1234);
    const deliveries = await Promise.all(Array.from({ length: 10 }, () => processor.deliver(event)));
    expect(deliveries.map((d) => d.status)).toEqual(Array(10).fill(200));
    expect(deliveries.filter((d) => d.body.duplicate === false)).toEqual([{ status: 200, body: { received: true, duplicate: false, credited: true } }]);

    const s = await state(accountId);
    expect(s.balanceNano).toBe(1234 * NANO_PER_CENT);
    expect(s.credits).toHaveLength(1);
    expect(s.events).toHaveLength(1);
  });

  it("records and acknowledges other event types and payments to unknown accounts without crediting", async () => {
    const accountId = await newAccount();
    const other: PaymentEvent = { ...processor.paymentSucceeded(accountId, 100), type: "payment.refunded" };
    expect(await processor.deliver(other)).toEqual({ status: 200, body: { received: true, duplicate: false, credited: false } });
    expect(await state(accountId)).toEqual({ balanceNano: 0, credits: [], events: [{ id: other.id, type: "payment.refunded", amount_nano: null }] });

    const lost = processor.paymentSucceeded("acct-unknown", 700);
    expect(await processor.deliver(lost)).toEqual({
      status: 200,
      body: { received: true, duplicate: false, credited: false, reason: "unknown_account" },
    });
    expect(await gw.db.prepare("SELECT account_id, amount_nano FROM payment_events WHERE id = ?").bind(lost.id).first()).toEqual({
      account_id: "acct-unknown",
      amount_nano: 700 * NANO_PER_CENT,
    });
  });

  it("refuses a signed payment event it cannot credit as sent (400, so the processor retries)", async () => {
    const accountId = await newAccount();
    const euros: PaymentEvent = { ...processor.paymentSucceeded(accountId, 100), data: { account_id: accountId, amount_usd_cents: 100, currency: "eur" } };
    const res = await processor.deliver(euros);
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ param: "currency" });
    const fraction: PaymentEvent = { ...processor.paymentSucceeded(accountId, 100), data: { account_id: accountId, amount_usd_cents: 1.5, currency: "usd" } };
    expect((await processor.deliver(fraction)).status).toBe(400);
    expect(await state(accountId)).toEqual({ balanceNano: 0, credits: [], events: [] });
  });
});
