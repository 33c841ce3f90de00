import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { apiKeys, chutes } from "../db/schema.ts";
import { sha256Hex } from "./hash.ts";
import { TtlCache } from "./ttl-cache.ts";
import type { ApiKeyRecord, ChuteRecord } from "./types.ts";

/** Revocations are seen within this time in every isolate. */
const KEY_TTL_MS = 5_000;
const CHUTE_TTL_MS = 10_000;

const keyCache = new TtlCache<ApiKeyRecord | null>(KEY_TTL_MS);
const chuteCache = new TtlCache<ChuteRecord | null>(CHUTE_TTL_MS);

/** The key record for a presented secret, or null when unknown, revoked or expired. */
export async function findApiKey(db: D1Database, secret: string): Promise<ApiKeyRecord | null> {
  const hash = await sha256Hex(secret);
  const record = await keyCache.get(hash, async () => {
    const row = await drizzle(db)
      .select({
        id: apiKeys.id,
        accountId: apiKeys.accountId,
        scopes: apiKeys.scopes,
        expiresAt: apiKeys.expiresAt,
        rpmLimit: apiKeys.rpmLimit,
        tpmLimit: apiKeys.tpmLimit,
      })
      .from(apiKeys)
      .where(and(eq(apiKeys.hash, hash), isNull(apiKeys.revokedAt)))
      .get();
    if (!row) return null;
    return { ...row, scopes: parseScopes(row.scopes) };
  });
  if (record && record.expiresAt !== null && record.expiresAt <= Date.now()) return null;
  return record;
}

/** Drop a key from this isolate's cache (after a revoke); other isolates see it within KEY_TTL_MS. */
export function forgetApiKey(hash: string): void {
  keyCache.delete(hash);
}

/** Scopes stored as a JSON array; anything else reads as no scopes. */
export function parseScopes(raw: string): string[] {
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : [];
  } catch {
    return [];
  }
}

/** The chute clients name as `model`, or null. */
export function findChute(db: D1Database, name: string): Promise<ChuteRecord | null> {
  return chuteCache.get(name, async () => {
    const row = await drizzle(db).select().from(chutes).where(eq(chutes.name, name)).get();
    return row ?? null;
  });
}

/** Drop a chute from this isolate's cache (after a change); other isolates see it within CHUTE_TTL_MS. */
export function forgetChute(name: string): void {
  chuteCache.delete(name);
}

/** Chutes visible to an account: public ones and its own. */
export async function listChutes(db: D1Database, accountId: string): Promise<ChuteRecord[]> {
  const rows = await drizzle(db).select().from(chutes).all();
  return rows.filter((c) => c.public || c.ownerAccountId === accountId);
}

export { sha256Hex };
export type { ApiKeyRecord, ChuteRecord };
