import type { chutes } from "../db/schema.ts";

export interface ApiKeyRecord {
  id: string;
  accountId: string;
  scopes: string[];
  expiresAt: number | null;
  /** Per-minute limits; null = the platform default. */
  rpmLimit: number | null;
  tpmLimit: number | null;
}

export type ChuteRecord = typeof chutes.$inferSelect;
