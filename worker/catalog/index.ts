import { and, asc, eq, isNull, or } from "drizzle-orm";
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

/**
 * Secrets this isolate has hashed, and their hashes: a key's digest is computed once per isolate,
 * not on every request (a hash never goes stale; revocation is the key cache's concern). Bounded
 * like the key cache, so a flood of made-up keys cannot grow it.
 */
const secretHashes = new Map<string, string>();
const MAX_SECRET_HASHES = 10_000;

async function hashSecret(secret: string): Promise<string> {
  const hash = await sha256Hex(secret);
  if (secretHashes.size >= MAX_SECRET_HASHES) secretHashes.clear();
  secretHashes.set(secret, hash);
  return hash;
}

/** The key record for a presented secret, or null when unknown, revoked or expired. */
export async function findApiKey(db: D1Database, secret: string): Promise<ApiKeyRecord | null> {
  const hash = secretHashes.get(secret) ?? (await hashSecret(secret));
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

/**
 * The chute clients name as `model`, as `accountId` sees it: null when there is no live chute
 * of that name, or when it is another account's private chute (so its existence is not revealed).
 */
export async function findChute(db: D1Database, name: string, accountId: string): Promise<ChuteRecord | null> {
  const chute = await chuteCache.get(name, async () => {
    const row = await drizzle(db)
      .select()
      .from(chutes)
      .where(and(eq(chutes.name, name), isNull(chutes.deletedAt)))
      .get();
    return row ?? null;
  });
  return chute && visibleTo(chute, accountId) ? chute : null;
}

/** Public chutes are everyone's to see and call; a private one only its owner's. */
export function visibleTo(chute: Pick<ChuteRecord, "public" | "ownerAccountId">, accountId: string): boolean {
  return chute.public || chute.ownerAccountId === accountId;
}

/**
 * Drop a chute from this isolate's cache (after a create, change or delete); other isolates see
 * the change within CHUTE_TTL_MS.
 */
export function forgetChute(name: string): void {
  chuteCache.delete(name);
}

/** Live chutes visible to an account: public ones and its own, by name. */
export function listChutes(db: D1Database, accountId: string): Promise<ChuteRecord[]> {
  return drizzle(db)
    .select()
    .from(chutes)
    .where(and(isNull(chutes.deletedAt), or(eq(chutes.public, true), eq(chutes.ownerAccountId, accountId))))
    .orderBy(asc(chutes.name))
    .all();
}

export { sha256Hex };
export type { ApiKeyRecord, ChuteRecord };
