import type { D1Database } from "@cloudflare/workers-types/experimental";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Miniflare, type MiniflareOptions } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { migrationStatements } from "../../scripts/lib/migrations.ts";
import { makeSeed, seedStatements, type Seed } from "../../scripts/lib/seed.ts";
import { ROOT, WORKER_BUNDLE } from "./paths.ts";

export interface Gateway {
  url: string;
  /** OpenAI base URL (`<url>/v1`). */
  baseURL: string;
  mf: Miniflare;
  seed: Seed;
  db: D1Database;
  /** The gateway's structured log lines (workerd's stdout), newest last. */
  logs: Record<string, unknown>[];
  /** Reload the Worker as a hot reload or a deploy does: agent sockets drop, storage stays. */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface GatewayOptions {
  seed?: Seed;
  /** Overrides of wrangler.jsonc `vars`. */
  vars?: Partial<Record<VarName, string>>;
  /** Start without the admin and webhook secrets (as a deploy that never set them). */
  withoutSecrets?: boolean;
}

type VarName =
  | "MAX_BODY_BYTES"
  | "QUEUE_WAIT_MS"
  | "FIRST_TOKEN_TIMEOUT_MS"
  | "STREAM_IDLE_TIMEOUT_MS"
  | "HOLD_TTL_MS"
  | "MINER_SHARE_BPS"
  | "FREE_DAILY_REQUESTS"
  | "MINER_STALE_AFTER_MS"
  | "RATE_LIMIT_RPM"
  | "RATE_LIMIT_TPM"
  | "SSE_KEEPALIVE_MS"
  | "SLOT_RELEASE_DELAY_MS"
  | "SCALER_TICK_MS"
  | "SCALER_SHORT_WINDOW_MS"
  | "SCALER_LONG_WINDOW_MS"
  | "SCALER_COOLDOWN_MS"
  | "DEPLOY_TIMEOUT_MS";

/** The secrets the test gateway runs with (wrangler secrets in production). */
export const TEST_SECRETS = {
  ADMIN_JWT_SECRET: "test-admin-secret-0123456789abcdef0123456789abcdef",
  PAYMENT_WEBHOOK_SECRET: "test-webhook-secret-0123456789abcdef",
} as const;

/**
 * The real gateway Worker (bundled by wrangler) in workerd through Miniflare, with an
 * in-memory D1 migrated from `migrations/` and seeded like `npm start` seeds it.
 */
/**
 * Miniflare options for the wrangler-built gateway bundle on 127.0.0.1 (a free port), with the
 * compatibility settings, vars and Durable Objects exactly as wrangler.jsonc declares them, plus
 * `bindings` on top. Shared by the tests and the bench (whose A/B runs pass another build as `scriptPath`).
 */
export function gatewayWorkerOptions(bindings: Record<string, string>, scriptPath = WORKER_BUNDLE) {
  const { workerOptions: fromConfig } = unstable_getMiniflareWorkerOptions(`${ROOT}/wrangler.jsonc`);
  return {
    host: "127.0.0.1",
    port: 0,
    modules: true,
    scriptPath,
    compatibilityDate: fromConfig.compatibilityDate,
    compatibilityFlags: fromConfig.compatibilityFlags,
    durableObjects: fromConfig.durableObjects,
    d1Databases: { DB: "sluice" },
    bindings: { ...fromConfig.bindings, ...bindings },
  } satisfies MiniflareOptions;
}

export async function startGateway(opts: GatewayOptions = {}): Promise<Gateway> {
  const seed = opts.seed ?? makeSeed();
  const logs: Record<string, unknown>[] = [];
  const persist = await mkdtemp(join(tmpdir(), "sluice-gw-"));
  const options: MiniflareOptions = {
    ...gatewayWorkerOptions({ ...(opts.withoutSecrets ? {} : TEST_SECRETS), ...opts.vars }),
    // Keep the gateway's JSON log lines for assertions instead of flooding the test output.
    // (warnings and errors arrive on stderr, the rest on stdout).
    handleRuntimeStdio(stdout, stderr) {
      for (const [input, out] of [
        [stdout, process.stdout],
        [stderr, process.stderr],
      ] as const) {
        createInterface({ input }).on("line", (line) => {
          try {
            logs.push(JSON.parse(line) as Record<string, unknown>);
          } catch {
            out.write(`[gateway] ${line}\n`);
          }
        });
      }
    },
    d1Persist: `${persist}/d1`,
    durableObjectsPersist: `${persist}/do`,
  };
  const mf = new Miniflare(options);
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const db = await mf.getD1Database("DB");
  const statements = [...(await migrationStatements(`${ROOT}/migrations`)), ...seedStatements(seed)];
  await db.batch(statements.map((s) => db.prepare(s)));
  const port = Number(new URL(url).port);
  return {
    url,
    baseURL: `${url}/v1`,
    mf,
    seed,
    db,
    logs,
    reload: () => mf.setOptions({ ...options, port }),
    close: async () => {
      await mf.dispose();
      await rm(persist, { recursive: true, force: true });
    },
  };
}
