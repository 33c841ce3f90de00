// Secrets are not in wrangler.jsonc (wrangler secret put; locally .sluice/secrets.env), so
// `wrangler types` does not see them.
declare namespace Cloudflare {
  interface Env {
    /** Operator secret signing admin JWTs (HS256). */
    ADMIN_JWT_SECRET?: string;
    /** Shared secret of the card processor's HMAC-signed webhooks. */
    PAYMENT_WEBHOOK_SECRET?: string;
  }
}
