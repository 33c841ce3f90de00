/**
 * Test double of the card processor: builds payment events, signs them the way the processor
 * does (`sluice-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` with the
 * shared webhook secret) and delivers them to the gateway's webhook. Knobs let a test send what
 * a broken or hostile sender would: a wrong secret, a stale or future timestamp, a body changed
 * after signing.
 */
import { createHmac, randomUUID } from "node:crypto";

export interface PaymentEvent {
  id: string;
  type: string;
  /** Unix seconds. */
  created: number;
  data: Record<string, unknown>;
}

export interface Delivery {
  status: number;
  body: Record<string, unknown>;
}

export interface DeliverOptions {
  /** Sign with this timestamp (unix seconds) instead of now. */
  timestamp?: number;
  /** Sign with this secret instead of the shared one. */
  secret?: string;
  /** Send this body instead of the one that was signed (tampering in transit). */
  tamperedBody?: string;
  /** Send this header value as is (or null: no header). */
  signatureHeader?: string | null;
}

export class CardProcessorDouble {
  constructor(
    private readonly webhookURL: string,
    private readonly secret: string,
  ) {}

  /** A `payment.succeeded` event for `cents` US cents to `accountId`, with a fresh event id. */
  paymentSucceeded(accountId: string, cents: number, id = `evt_${randomUUID()}`): PaymentEvent {
    return {
      id,
      type: "payment.succeeded",
      created: Math.floor(Date.now() / 1000),
      data: { account_id: accountId, amount_usd_cents: cents, currency: "usd" },
    };
  }

  /** The processor's signature header for `body` signed at `timestamp`. */
  sign(body: string, timestamp: number, secret = this.secret): string {
    const v1 = createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
    return `t=${timestamp},v1=${v1}`;
  }

  /** POST the event to the webhook as the processor would (one attempt; no retries). */
  async deliver(event: PaymentEvent, opts: DeliverOptions = {}): Promise<Delivery> {
    const body = JSON.stringify(event);
    const timestamp = opts.timestamp ?? Math.floor(Date.now() / 1000);
    const header = opts.signatureHeader === undefined ? this.sign(body, timestamp, opts.secret) : opts.signatureHeader;
    const res = await fetch(this.webhookURL, {
      method: "POST",
      headers: { "content-type": "application/json", ...(header === null ? {} : { "sluice-signature": header }) },
      body: opts.tamperedBody ?? body,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }
}
