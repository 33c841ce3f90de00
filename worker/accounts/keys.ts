import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { forgetApiKey, sha256Hex } from "../catalog/index.ts";
import { accounts, apiKeys } from "../db/schema.ts";

/** What an API key may do. */
export const SCOPES = ["invoke", "usage:read", "keys:manage", "chutes:manage"] as const;
export type Scope = (typeof SCOPES)[number];

/** Characters of the key kept in D1 and shown to the user so they can recognise it. */
const PREFIX_LENGTH = 14;

export interface CreatedApiKey {
  id: string;
  /** The secret itself: returned once, at creation, never stored. */
  key: string;
  prefix: string;
  name: string;
  scopes: Scope[];
  expiresAt: number | null;
}

/** A new key: `sk-sluice-` and 43 url-safe characters (256 random bits). */
function newSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `sk-sluice-${btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}`;
}

export async function createApiKey(
  db: D1Database,
  opts: { accountId: string; name?: string; scopes: readonly Scope[]; expiresAt?: number | null },
): Promise<CreatedApiKey> {
  const key = newSecret();
  const row = {
    id: `key-${crypto.randomUUID()}`,
    accountId: opts.accountId,
    name: opts.name ?? "",
    prefix: key.slice(0, PREFIX_LENGTH),
    hash: await sha256Hex(key),
    scopes: JSON.stringify([...new Set(opts.scopes)]),
    expiresAt: opts.expiresAt ?? null,
  };
  await drizzle(db).insert(apiKeys).values(row);
  return { id: row.id, key, prefix: row.prefix, name: row.name, scopes: [...new Set(opts.scopes)], expiresAt: row.expiresAt };
}

/**
 * Revoke a key of `accountId` (null: any account, for the operator). Takes effect at once in
 * this isolate and within the key cache's TTL (seconds) in every other. False if not found.
 */
export async function revokeApiKey(db: D1Database, accountId: string | null, keyId: string): Promise<boolean> {
  const where = accountId === null ? eq(apiKeys.id, keyId) : and(eq(apiKeys.id, keyId), eq(apiKeys.accountId, accountId));
  const row = await drizzle(db).select({ hash: apiKeys.hash, revokedAt: apiKeys.revokedAt }).from(apiKeys).where(where).get();
  if (!row) return false;
  await drizzle(db)
    .update(apiKeys)
    .set({ revokedAt: Date.now() })
    .where(and(eq(apiKeys.id, keyId), isNull(apiKeys.revokedAt)));
  forgetApiKey(row.hash);
  return true;
}

export async function createAccount(db: D1Database, opts: { name: string }): Promise<{ id: string; name: string }> {
  const id = `acct-${crypto.randomUUID()}`;
  await drizzle(db).insert(accounts).values({ id, name: opts.name });
  return { id, name: opts.name };
}
