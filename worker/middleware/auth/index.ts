import { createMiddleware } from "hono/factory";
import { findApiKey } from "../../catalog/index.ts";
import type { AppEnv } from "../../env.ts";
import { ApiError } from "../../errors.ts";

export interface ApiKeyAuthOptions {
  /** Scope the key must carry. */
  scope?: string;
}

function bearer(header: string | undefined): string | null {
  if (!header) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1] ?? null;
}

/** Authenticates `Authorization: Bearer <key>` and sets `c.var.apiKey`. */
export const apiKeyAuth = (options: ApiKeyAuthOptions = {}) => {
  const scope = options.scope ?? "invoke";
  return createMiddleware<AppEnv>(async function apiKeyAuth(c, next) {
    const secret = bearer(c.req.header("authorization"));
    if (!secret) {
      throw new ApiError(
        "invalid_api_key",
        "You didn't provide an API key. Provide it in the Authorization header as 'Bearer YOUR_KEY'.",
      );
    }
    const key = await findApiKey(c.env.DB, secret);
    if (!key) throw new ApiError("invalid_api_key", `Incorrect API key provided: ${redact(secret)}.`);
    if (!key.scopes.includes(scope)) {
      throw new ApiError("permission_denied", `This API key lacks the '${scope}' scope.`);
    }
    c.set("apiKey", key);
    await next();
  });
};

function redact(secret: string): string {
  return secret.length <= 12 ? "***" : `${secret.slice(0, 8)}...${secret.slice(-4)}`;
}
