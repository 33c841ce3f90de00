import { errors, jwtVerify, type JWTPayload } from "jose";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";

/** The `aud` every admin token must carry, so no other HS256 token signed with the secret passes. */
export const ADMIN_AUDIENCE = "sluice-admin";
/** Longest lifetime (exp - iat) accepted; the CLI mints 5-minute tokens. */
const MAX_LIFETIME_S = 60 * 60;
const CLOCK_TOLERANCE_S = 30;
/** HS256 wants a key at least as long as the hash; shorter secrets are a misconfiguration. */
const MIN_SECRET_LENGTH = 32;

export interface AdminPrincipal {
  /** The operator the token was minted for (its `sub`). */
  sub: string;
}

export type AdminEnv = {
  Bindings: AppEnv["Bindings"];
  Variables: AppEnv["Variables"] & { admin: AdminPrincipal };
};

function bearer(header: string | undefined): string | null {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return m?.[1] ?? null;
}

/** Why a token was refused, for the operator (jose's messages name the failed claim, never the secret). */
function refusal(err: unknown): string {
  if (err instanceof errors.JWTExpired) return "The admin token has expired; mint a new one.";
  if (err instanceof errors.JWTClaimValidationFailed) return `The admin token was refused: ${err.message}.`;
  if (err instanceof errors.JOSEAlgNotAllowed) return "The admin token must be signed with HS256.";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "The admin token's signature is invalid.";
  return "The admin token is malformed.";
}

/**
 * Authenticates `Authorization: Bearer <JWT>` for the operator API: HS256 with ADMIN_JWT_SECRET
 * (no other algorithm, so never an unsigned `alg: none` token), `aud` sluice-admin, a `sub`, and
 * `iat`/`exp` at most an hour apart. Without the secret the admin API is off (503), not open.
 */
export const adminAuth = () =>
  createMiddleware<AdminEnv>(async function adminAuth(c, next) {
    const secret = c.env.ADMIN_JWT_SECRET;
    if (!secret || secret.length < MIN_SECRET_LENGTH) {
      throw new ApiError(
        "not_configured",
        `The admin API is disabled: set the ADMIN_JWT_SECRET secret (at least ${MIN_SECRET_LENGTH} characters) to enable it.`,
      );
    }
    const token = bearer(c.req.header("authorization"));
    if (!token) {
      throw new ApiError("invalid_api_key", "An admin token is required: 'Authorization: Bearer <JWT>' (npm run admin mints one).");
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, new TextEncoder().encode(secret), {
        algorithms: ["HS256"],
        audience: ADMIN_AUDIENCE,
        requiredClaims: ["sub", "exp", "iat"],
        maxTokenAge: MAX_LIFETIME_S,
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (err) {
      throw new ApiError("invalid_api_key", refusal(err));
    }
    const { sub, exp, iat } = payload;
    if (typeof sub !== "string" || sub === "") throw new ApiError("invalid_api_key", 'The admin token was refused: "sub" must name the operator.');
    if (exp === undefined || iat === undefined || exp - iat > MAX_LIFETIME_S) {
      throw new ApiError("invalid_api_key", `The admin token was refused: its lifetime (exp - iat) is over ${MAX_LIFETIME_S} seconds.`);
    }
    c.set("admin", { sub });
    await next();
  });
