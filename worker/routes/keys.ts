import { asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { z } from "zod";
import { createApiKey, revokeApiKey, SCOPES, type Scope } from "../accounts/keys.ts";
import { parseScopes } from "../catalog/index.ts";
import { apiKeys } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { readJson } from "../http/json.ts";
import { parseBody } from "../http/json.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

/**
 * The caller's API keys. Times on the wire are unix seconds (as OpenAI's `created`); D1 keeps
 * epoch milliseconds, which is what the key lookup compares `expires_at` with.
 */

/** 9999-12-31T23:59:59Z: keeps `expires_at * 1000` a safe integer and a valid date. */
const MAX_EXPIRES_AT = 253_402_300_799;

const CreateKeyBody = z.object({
  name: z.string().max(128).optional(),
  scopes: z.array(z.enum(SCOPES)).min(1).optional(),
  expires_at: z.int().positive().max(MAX_EXPIRES_AT).nullable().optional(),
});

const toSeconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));

/**
 * The new key's expiry in epoch ms. A key cannot outlive the key that creates it: when the
 * caller's key expires, an omitted `expires_at` takes its expiry, and a later one (or `null`,
 * never) is refused.
 */
function expiryMs(requested: number | null | undefined, callerExpiresAt: number | null, now: number): number | null {
  if (requested !== undefined && requested !== null && requested * 1000 <= now) {
    throw new ApiError("invalid_request", "Invalid parameter 'expires_at': it must be in the future (unix seconds).", "expires_at");
  }
  const ms = requested === undefined || requested === null ? null : requested * 1000;
  if (callerExpiresAt === null) return ms;
  if (requested === undefined) return callerExpiresAt;
  if (ms === null || ms > callerExpiresAt) {
    throw new ApiError(
      "permission_denied",
      `A key cannot outlive the key that creates it: 'expires_at' must be at most ${toSeconds(callerExpiresAt)}.`,
      "expires_at",
    );
  }
  return ms;
}

export const keyRoutes = new Hono<AppEnv>()
  .use(apiKeyAuth({ scope: "keys:manage" }))
  .post("/", async (c) => {
    const json = await readJson(c, { emptyBody: {} }); // every field is optional
    const unknown = typeof json === "object" && json !== null ? Object.keys(json).find((k) => !Object.hasOwn(CreateKeyBody.shape, k)) : undefined;
    if (unknown !== undefined) throw new ApiError("invalid_request", `Unrecognized request argument supplied: ${unknown}.`, unknown);
    const body = parseBody(CreateKeyBody, json);
    const caller = c.get("apiKey");
    const scopes: Scope[] = body.scopes ?? ["invoke"];
    const missing = scopes.filter((s) => !caller.scopes.includes(s));
    if (missing.length > 0) {
      throw new ApiError(
        "permission_denied",
        `A key can only grant scopes its creator has; this API key lacks ${missing.map((s) => `'${s}'`).join(", ")}.`,
        "scopes",
      );
    }
    const expiresAt = expiryMs(body.expires_at, caller.expiresAt, Date.now());
    const created = await createApiKey(c.env.DB, { accountId: caller.accountId, name: body.name ?? "", scopes, expiresAt });
    const row = await drizzle(c.env.DB).select({ createdAt: apiKeys.createdAt }).from(apiKeys).where(eq(apiKeys.id, created.id)).get();
    return c.json(
      {
        object: "api_key",
        id: created.id,
        key: created.key,
        prefix: created.prefix,
        name: created.name,
        scopes: created.scopes,
        expires_at: toSeconds(created.expiresAt),
        created_at: toSeconds(row?.createdAt ?? Date.now()),
      },
      201,
    );
  })
  .get("/", async (c) => {
    const rows = await drizzle(c.env.DB)
      .select({
        id: apiKeys.id,
        prefix: apiKeys.prefix,
        name: apiKeys.name,
        scopes: apiKeys.scopes,
        expiresAt: apiKeys.expiresAt,
        revokedAt: apiKeys.revokedAt,
        createdAt: apiKeys.createdAt,
      })
      .from(apiKeys)
      .where(eq(apiKeys.accountId, c.get("apiKey").accountId))
      .orderBy(asc(apiKeys.createdAt), asc(apiKeys.id))
      .all();
    return c.json({
      object: "list",
      data: rows.map((k) => ({
        object: "api_key",
        id: k.id,
        prefix: k.prefix,
        name: k.name,
        scopes: parseScopes(k.scopes),
        expires_at: toSeconds(k.expiresAt),
        revoked_at: toSeconds(k.revokedAt),
        created_at: toSeconds(k.createdAt),
      })),
    });
  })
  .delete("/:id", async (c) => {
    const id = c.req.param("id");
    // Another account's key is "not found" too: its existence is not revealed.
    if (!(await revokeApiKey(c.env.DB, c.get("apiKey").accountId, id))) {
      throw new ApiError("not_found", `No API key with id '${id}'.`, "id");
    }
    return c.json({ object: "api_key", id, deleted: true });
  });
