import { createHash, randomBytes, randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { hotkeyFromSeed, toHex } from "../../protocol/index.ts";
import { keyFileJson } from "../../miner-agent/hotkey.ts";

/**
 * The catalog rows a local platform starts with: an account with an API key, a chute, and a
 * registered miner (its sr25519 hotkey). Used by `npm start` (through wrangler) and the tests
 * (through Miniflare), so both run the same seed.
 */
export interface SeedChute {
  id: string;
  name: string;
  modelRef: string;
  engine: "llama-cpp" | "vllm" | "sglang" | "openai-upstream";
  contextLength: number;
  maxOutputTokens: number;
  promptPriceNanoPerM: number;
  completionPriceNanoPerM: number;
  concurrency: number;
  /** Listing metadata (GET /v1/models). */
  displayName?: string;
  description?: string;
  huggingFaceId?: string;
  quantization?: "int4" | "int8" | "fp4" | "fp6" | "fp8" | "fp16" | "bf16" | "fp32" | "unknown";
  /** Scaling (defaults 0 and 1) and what an instance needs (default: no GPU). */
  minInstances?: number;
  maxInstances?: number;
  gpu?: { count: number; minVramMb: number; types: string[] };
}

export interface SeedMiner {
  /** The hotkey's SS58 address (the miner's id). */
  id: string;
  /** A readable name (tests and logs). */
  name: string;
  /** The hotkey's 32-byte secret seed, hex. */
  secretSeed: string;
}

export interface Seed {
  accountId: string;
  apiKey: string;
  apiKeyId: string;
  creditNano: number;
  chutes: SeedChute[];
  miners: SeedMiner[];
}

export const sha256Hex = (s: string): string => createHash("sha256").update(s).digest("hex");

/** A new API key: `sk-sluice-` and 43 url-safe characters (256 random bits). */
export function newApiKey(): string {
  return `sk-sluice-${randomBytes(32).toString("base64url")}`;
}

/** A miner with a new random hotkey. */
export function newMiner(name: string, secretSeed: Uint8Array = new Uint8Array(randomBytes(32))): SeedMiner {
  return { id: hotkeyFromSeed(secretSeed).address, name, secretSeed: toHex(secretSeed) };
}

/** The seeded miner with this name. */
export function minerNamed(seed: Seed, name: string): SeedMiner {
  const miner = seed.miners.find((m) => m.name === name);
  if (!miner) throw new Error(`no seeded miner named ${name}`);
  return miner;
}

/** Write the miner's hotkey file (mode 0600), as `sluice-miner init` would. */
export async function writeMinerKey(path: string, miner: SeedMiner): Promise<void> {
  await writeFile(path, keyFileJson(Buffer.from(miner.secretSeed, "hex")), { mode: 0o600 });
}

/** The dev key may do everything an account can do (not the operator's admin API). */
export const DEV_KEY_SCOPES = ["invoke", "usage:read", "keys:manage", "chutes:manage"];

export const TINY_CHUTE: SeedChute = {
  id: "chute-tiny-chat",
  name: "sluice/tiny-chat",
  modelRef: "models/tiny-sluice.gguf",
  engine: "llama-cpp",
  contextLength: 2048,
  maxOutputTokens: 1024,
  promptPriceNanoPerM: 100_000_000, // $0.10 per million prompt tokens
  completionPriceNanoPerM: 400_000_000, // $0.40 per million completion tokens
  concurrency: 4,
  displayName: "Sluice Tiny Chat",
  description: "A tiny random-weights llama model with a word vocabulary, for tests and local development: fluent nonsense, fast.",
  quantization: "fp32",
};

export function makeSeed(opts: { chutes?: SeedChute[]; minerNames?: string[]; creditUsd?: number } = {}): Seed {
  return {
    accountId: "acct-dev",
    apiKey: newApiKey(),
    apiKeyId: `key-${randomUUID()}`,
    creditNano: Math.round((opts.creditUsd ?? 10) * 1e9),
    chutes: opts.chutes ?? [TINY_CHUTE],
    miners: (opts.minerNames ?? ["miner-dev"]).map((name) => newMiner(name)),
  };
}

const q = (v: string | number): string => (typeof v === "number" ? String(Math.trunc(v)) : `'${v.replaceAll("'", "''")}'`);

/** Idempotent SQL: re-running it keeps existing rows and adds the new key and miners. */
export function seedStatements(seed: Seed): string[] {
  const out = [
    `INSERT OR IGNORE INTO accounts (id, name) VALUES (${q(seed.accountId)}, 'dev')`,
    // The account's ledger pulls this credit from D1 the first time it serves the account.
    `INSERT OR IGNORE INTO credits (reference, account_id, amount_nano, source) VALUES (${q(`seed:${seed.accountId}`)}, ${q(seed.accountId)}, ${q(seed.creditNano)}, 'seed')`,
    `INSERT OR IGNORE INTO api_keys (id, account_id, name, prefix, hash, scopes) VALUES (${q(seed.apiKeyId)}, ${q(seed.accountId)}, 'dev', ${q(seed.apiKey.slice(0, 14))}, ${q(sha256Hex(seed.apiKey))}, ${q(JSON.stringify(DEV_KEY_SCOPES))})`,
  ];
  for (const c of seed.chutes) {
    out.push(
      `INSERT OR REPLACE INTO chutes (id, name, owner_account_id, model_ref, engine, context_length, max_output_tokens, prompt_price_nano_per_m, completion_price_nano_per_m, concurrency, min_instances, max_instances, public, display_name, description, hugging_face_id, quantization, gpu_count, min_vram_mb, gpu_types) VALUES (${[
        c.id,
        c.name,
        seed.accountId,
        c.modelRef,
        c.engine,
        c.contextLength,
        c.maxOutputTokens,
        c.promptPriceNanoPerM,
        c.completionPriceNanoPerM,
        c.concurrency,
        c.minInstances ?? 0,
        c.maxInstances ?? 1,
      ]
        .map(q)
        .join(", ")}, 1, ${c.displayName === undefined ? "NULL" : q(c.displayName)}, ${q(c.description ?? "")}, ${c.huggingFaceId === undefined ? "NULL" : q(c.huggingFaceId)}, ${q(c.quantization ?? "unknown")}, ${[
        c.gpu?.count ?? 0,
        c.gpu?.minVramMb ?? 0,
        JSON.stringify(c.gpu?.types ?? []),
      ]
        .map(q)
        .join(", ")})`,
    );
  }
  for (const m of seed.miners) {
    out.push(`INSERT INTO miners (id, name) VALUES (${q(m.id)}, ${q(m.name)}) ON CONFLICT(id) DO UPDATE SET name = excluded.name, status = 'active'`);
  }
  return out;
}
