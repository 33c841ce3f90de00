import { sql } from "drizzle-orm";
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

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
  createdAt: createdAt(),
});

/**
 * Every credit granted to an account (seed, operator top-up, card payment), idempotent by its
 * reference. The account's AccountLedger DO holds the live balance; it applies each credit once
 * (by reference) and pulls any it has not seen from here.
 */
export const credits = sqliteTable(
  "credits",
  {
    /** Idempotency key, e.g. `seed:acct-dev`, `admin:<ref>`, `payment:<event id>`. */
    reference: text("reference").primaryKey(),
    accountId: text("account_id")
      .notNull()
      .references(() => accounts.id),
    amountNano: integer("amount_nano").notNull(),
    source: text("source", { enum: ["seed", "admin", "payment"] }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [index("credits_account_idx").on(t.accountId)],
);

/** Card-processor webhook events received, by the processor's event id (replays are ignored). */
export const paymentEvents = sqliteTable("payment_events", {
  id: text("id").primaryKey(),
  type: text("type").notNull(),
  accountId: text("account_id"),
  amountNano: integer("amount_nano"),
  /** The processor's signature timestamp, epoch seconds. */
  signedAt: integer("signed_at").notNull(),
  receivedAt: createdAt(),
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
    /** Requests and tokens per minute for this key; null = the platform default (RATE_LIMIT_RPM / _TPM). */
    rpmLimit: integer("rpm_limit"),
    tpmLimit: integer("tpm_limit"),
    createdAt: createdAt(),
  },
  (t) => [index("api_keys_account_idx").on(t.accountId)],
);

/** How a chute's model is served; miners map each kind to a way of launching it (see the agent's `deploy` config). */
export const CHUTE_ENGINES = ["llama-cpp", "vllm", "sglang", "openai-upstream"] as const;
export type ChuteEngine = (typeof CHUTE_ENGINES)[number];

export const chutes = sqliteTable(
  "chutes",
  {
  id: text("id").primaryKey(),
  /** The name clients pass as `model`, e.g. `sluice/tiny-chat`; unique among chutes not deleted. */
  name: text("name").notNull(),
  ownerAccountId: text("owner_account_id")
    .notNull()
    .references(() => accounts.id),
  modelRef: text("model_ref").notNull(),
  engine: text("engine", { enum: CHUTE_ENGINES }).notNull(),
  contextLength: integer("context_length").notNull(),
  maxOutputTokens: integer("max_output_tokens").notNull(),
  promptPriceNanoPerM: integer("prompt_price_nano_per_m").notNull().default(0),
  completionPriceNanoPerM: integer("completion_price_nano_per_m").notNull().default(0),
  /** Price of prompt tokens served from the engine's prefix cache; null = the prompt price. */
  cachedPromptPriceNanoPerM: integer("cached_prompt_price_nano_per_m"),
  concurrency: integer("concurrency").notNull().default(1),
  minInstances: integer("min_instances").notNull().default(0),
  maxInstances: integer("max_instances").notNull().default(1),
  public: integer("public", { mode: "boolean" }).notNull().default(true),
  // Listing metadata (OpenRouter's provider fields).
  /** Display name; null = the chute's name. */
  displayName: text("display_name"),
  description: text("description").notNull().default(""),
  /** The Hugging Face repository of the weights, e.g. `Qwen/Qwen3-8B`. */
  huggingFaceId: text("hugging_face_id"),
  /** Weight precision as OpenRouter names it: int4, int8, fp4, fp6, fp8, fp16, bf16, fp32 or unknown. */
  quantization: text("quantization", { enum: ["int4", "int8", "fp4", "fp6", "fp8", "fp16", "bf16", "fp32", "unknown"] })
    .notNull()
    .default("unknown"),
  /** When the chute stops being served (ISO date), or null. */
  deprecationDate: text("deprecation_date"),
  // What an instance needs (deploy offers go to miners with matching free GPUs).
  /** GPUs per instance; 0 = runs on CPU. */
  gpuCount: integer("gpu_count").notNull().default(0),
  /** Minimum memory of each GPU, in MiB. */
  minVramMb: integer("min_vram_mb").notNull().default(0),
  /** JSON array of allowed GPU model substrings (e.g. ["h100","a100"]); empty = any. */
  gpuTypes: text("gpu_types").notNull().default("[]"),
  /** Set when the chute was deleted: it is no longer listed or callable, and its instances drain. */
  deletedAt: integer("deleted_at"),
  updatedAt: integer("updated_at"),
  createdAt: createdAt(),
  },
  (t) => [uniqueIndex("chutes_live_name_idx").on(t.name).where(sql`deleted_at IS NULL`), index("chutes_owner_idx").on(t.ownerAccountId)],
);

/**
 * The miner registry: who may connect. A miner is its sr25519 hotkey (SS58 address); the
 * operator adds or bans miners, or imports a metagraph snapshot.
 */
export const miners = sqliteTable("miners", {
  /** The hotkey's SS58 address. */
  id: text("id").primaryKey(),
  name: text("name").notNull().default(""),
  coldkey: text("coldkey"),
  /** The miner's uid on the subnet (metagraph imports). */
  uid: integer("uid"),
  /** Who registered it: the operator, or a metagraph snapshot import. */
  source: text("source", { enum: ["admin", "metagraph"] }).notNull().default("admin"),
  /** banned: refused by the operator; deregistered: no longer in the imported metagraph. */
  status: text("status", { enum: ["active", "banned", "deregistered"] })
    .notNull()
    .default("active"),
  /** What the agent reported when it last connected: its GPUs (JSON) and whether it takes deploy offers. */
  gpus: text("gpus").notNull().default("[]"),
  acceptsOffers: integer("accepts_offers", { mode: "boolean" }).notNull().default(false),
  /** Set while an agent is connected (its session id), for the scaler's search for miners. */
  sessionId: text("session_id"),
  lastSeenAt: integer("last_seen_at"),
  createdAt: createdAt(),
});

/** Nonces miners signed for HTTP requests (e.g. earnings), kept until they expire so none is used twice. */
export const minerNonces = sqliteTable(
  "miner_nonces",
  {
    minerId: text("miner_id").notNull(),
    nonce: text("nonce").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.minerId, t.nonce] }), index("miner_nonces_expiry_idx").on(t.expiresAt)],
);

export const invocations = sqliteTable(
  "invocations",
  {
    id: text("id").primaryKey(),
    accountId: text("account_id").notNull(),
    apiKeyId: text("api_key_id").notNull(),
    chuteId: text("chute_id").notNull(),
    minerId: text("miner_id"),
    instanceId: text("instance_id"),
    endpoint: text("endpoint", { enum: ["chat", "completion", "embedding"] }).notNull(),
    stream: integer("stream", { mode: "boolean" }).notNull(),
    outcome: text("outcome", { enum: ["ok", "error", "cancelled"] }).notNull(),
    errorCode: text("error_code"),
    finishReason: text("finish_reason"),
    attempts: integer("attempts").notNull(),
    /** Billed prompt tokens: the miner's count, clamped to the gateway's upper bound. */
    promptTokens: integer("prompt_tokens").notNull().default(0),
    /** Billed completion tokens: counted by the gateway from what it relayed to the client. */
    completionTokens: integer("completion_tokens").notNull().default(0),
    /** What the miner claimed, kept to compare with the gateway's own counts. */
    claimedPromptTokens: integer("claimed_prompt_tokens"),
    claimedCompletionTokens: integer("claimed_completion_tokens"),
    /** The hold placed before dispatch and the amount charged when it settled. */
    holdNano: integer("hold_nano").notNull().default(0),
    costNano: integer("cost_nano").notNull().default(0),
    /** The serving miner's share of the charge. */
    minerEarningsNano: integer("miner_earnings_nano").notNull().default(0),
    ttftMs: integer("ttft_ms"),
    durationMs: integer("duration_ms").notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    index("invocations_account_idx").on(t.accountId, t.createdAt),
    index("invocations_chute_idx").on(t.chuteId),
    index("invocations_miner_idx").on(t.minerId),
  ],
);
