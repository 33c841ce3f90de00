import type { chutes } from "../db/schema.ts";

export interface ApiKeyRecord {
  id: string;
  accountId: string;
  scopes: string[];
  expiresAt: number | null;
}

export type ChuteRecord = typeof chutes.$inferSelect;
