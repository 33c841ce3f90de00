import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * The catalog, in D1. Money is integer nano-USD (1 USD = 1e9); prices are nano-USD per
 * million tokens, so $0.15 / 1M tokens is 150_000_000.
 */

const createdAt = () =>
  integer("created_at")
    .notNull()
    .default(sql`(unixepoch('subsec') * 1000)`);

export const accounts = sqliteTable("accounts", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** Credit granted so far; the per-account ledger holds the live balance. */
  creditNano: integer("credit_nano").notNull().default(0),
  createdAt: createdAt(),
});

export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    name: text("name").notNull().default(""),
    /** The first characters of the key, shown to the user to recognise it. */
    prefix: text("prefix").notNull(),
    /** SHA-256 of the whole key, hex. The key itself is never stored. */
    hash: text("hash").notNull().unique(),
    /** JSON array of scopes. */
    scopes: text("scopes").notNull().default('["invoke"]'),
    expiresAt: integer("expires_at"),
    revokedAt: integer("revoked_at"),
    createdAt: createdAt(),
  },
  (t) => [index("api_keys_account_idx").on(t.accountId)],
);

export const chutes = sqliteTable("chutes", {
  id: text("id").primaryKey(),
  /** The name clients pass as `model`, e.g. `sluice/tiny-chat`. */
  name: text("name").notNull().unique(),
  ownerAccountId: text("owner_account_id")
    .notNull()
    .references(() => accounts.id),
  modelRef: text("model_ref").notNull(),
  engine: text("engine", { enum: ["llama-cpp", "openai-upstream"] }).notNull(),
  contextLength: integer("context_length").notNull(),
  maxOutputTokens: integer("max_output_tokens").notNull(),
  promptPriceNanoPerM: integer("prompt_price_nano_per_m").notNull().default(0),
  completionPriceNanoPerM: integer("completion_price_nano_per_m").notNull().default(0),
  concurrency: integer("concurrency").notNull().default(1),
  minInstances: integer("min_instances").notNull().default(0),
  maxInstances: integer("max_instances").notNull().default(1),
  public: integer("public", { mode: "boolean" }).notNull().default(true),
  createdAt: createdAt(),
});

export const miners = sqliteTable("miners", {
  id: text("id").primaryKey(),
  name: text("name").notNull().default(""),
  /** SHA-256 of the miner's secret token, hex (until hotkey identity replaces it). */
  tokenHash: text("token_hash").notNull(),
  status: text("status", { enum: ["active", "banned"] })
    .notNull()
    .default("active"),
  lastSeenAt: integer("last_seen_at"),
  createdAt: createdAt(),
});

export const invocations = sqliteTable(
  "invocations",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    apiKeyId: text("api_key_id").notNull(),
    chuteId: text("chute_id").notNull(),
    minerId: text("miner_id"),
    instanceId: text("instance_id"),
    endpoint: text("endpoint", { enum: ["chat", "completion"] }).notNull(),
    stream: integer("stream", { mode: "boolean" }).notNull(),
    outcome: text("outcome", { enum: ["ok", "error", "cancelled"] }).notNull(),
    errorCode: text("error_code"),
    finishReason: text("finish_reason"),
    attempts: integer("attempts").notNull(),
    promptTokens: integer("prompt_tokens").notNull().default(0),
    completionTokens: integer("completion_tokens").notNull().default(0),
    costNano: integer("cost_nano").notNull().default(0),
    ttftMs: integer("ttft_ms"),
    durationMs: integer("duration_ms").notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("invocations_account_idx").on(t.accountId, t.createdAt), index("invocations_chute_idx").on(t.chuteId)],
);
