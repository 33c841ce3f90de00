/**
 * `npm run admin -- <command>`: the operator CLI. Mints a short-lived admin JWT (HS256, aud
 * sluice-admin, 5 minutes) from the operator secret and calls the gateway's /v1/admin API.
 *
 * Secret: $SLUICE_ADMIN_SECRET (the gateway's ADMIN_JWT_SECRET), else the local one `npm start`
 * wrote to .sluice/secrets.env. Gateway: --url, else $SLUICE_URL, else .sluice/dev.json.
 */
import { existsSync, readFileSync } from "node:fs";
import { userInfo } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { SignJWT } from "jose";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const SECRETS_ENV = `${ROOT}/.sluice/secrets.env`;
const DEV_JSON = `${ROOT}/.sluice/dev.json`;

const HELP = `Usage: npm run admin -- <command> [options]

Commands:
  accounts create --name N [--credit-usd X]          new account, an API key with every scope, optional credit
  accounts credit --account ID --usd X --reference R  add credit (once per reference; a repeat is a no-op)
  accounts show --account ID                          balance, ledger audit, keys, recent credits
  keys create --account ID [--name N] [--scopes a,b] [--expires-at ISO|unix-seconds]
                                                      new API key (default scope: invoke)
  keys revoke --key ID                                revoke an API key
  chutes set-price --chute ID [--prompt-usd-per-m X] [--completion-usd-per-m Y] [--cached-prompt-usd-per-m Z|none]
                                                      set prices in USD per million tokens
  miners add --hotkey SS58 [--name N] [--coldkey SS58]
                                                      register a miner's hotkey (idempotent; a banned one stays banned)
  miners ban --hotkey SS58 [--reason R]               refuse the miner from now on, disconnecting its agent at once
  miners unban --hotkey SS58                          lift a ban
  miners list [--status S] [--source admin|metagraph]
                                                      the registry: status, source, uid, connected, GPUs
  miners import --file snapshot.json                  register a metagraph snapshot's neurons; imported miners not in
                                                      it are deregistered (bans and hand-added miners are kept)
  help                                                this text

Options for every command:
  --url URL   the gateway (default: $SLUICE_URL, else .sluice/dev.json from npm start)

The admin secret comes from $SLUICE_ADMIN_SECRET (the gateway's ADMIN_JWT_SECRET), else from
.sluice/secrets.env (written by npm start). Output is JSON; errors go to stderr with exit code 1.
Scopes: invoke, usage:read, keys:manage, chutes:manage. USD amounts are exact decimals ("12.50").
Miner statuses: active, banned, deregistered. A snapshot is JSON: {"netuid", "block", "network"?,
"neurons": [{"uid", "hotkey", "coldkey", ...}]} (see README, "Miner registry").`;

const OPTIONS = {
  url: { type: "string" },
  name: { type: "string" },
  "credit-usd": { type: "string" },
  account: { type: "string" },
  usd: { type: "string" },
  reference: { type: "string" },
  key: { type: "string" },
  scopes: { type: "string" },
  "expires-at": { type: "string" },
  chute: { type: "string" },
  "prompt-usd-per-m": { type: "string" },
  "completion-usd-per-m": { type: "string" },
  "cached-prompt-usd-per-m": { type: "string" },
  hotkey: { type: "string" },
  coldkey: { type: "string" },
  reason: { type: "string" },
  status: { type: "string" },
  source: { type: "string" },
  file: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Option = Exclude<keyof typeof OPTIONS, "url" | "help">;
type Values = Partial<Record<Option, string>>;

interface ApiRequest {
  method: "GET" | "POST" | "PATCH" | "DELETE";
  path: string;
  body?: Record<string, unknown>;
}

interface Command {
  required: readonly Option[];
  optional: readonly Option[];
  request(v: Values): ApiRequest;
}

const id = (s: string | undefined) => encodeURIComponent(s ?? "");

/** Present options only, so the API sees exactly what the operator gave. */
function defined(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined));
}

const COMMANDS: Record<string, Command> = {
  "accounts create": {
    required: ["name"],
    optional: ["credit-usd"],
    request: (v) => ({ method: "POST", path: "/accounts", body: defined({ name: v.name, credit_usd: v["credit-usd"] }) }),
  },
  "accounts credit": {
    required: ["account", "usd", "reference"],
    optional: [],
    request: (v) => ({ method: "POST", path: `/accounts/${id(v.account)}/credits`, body: { usd: v.usd, reference: v.reference } }),
  },
  "accounts show": {
    required: ["account"],
    optional: [],
    request: (v) => ({ method: "GET", path: `/accounts/${id(v.account)}` }),
  },
  "keys create": {
    required: ["account"],
    optional: ["name", "scopes", "expires-at"],
    request: (v) => {
      const expires = v["expires-at"];
      return {
        method: "POST",
        path: "/keys",
        body: defined({
          account_id: v.account,
          name: v.name,
          scopes: v.scopes?.split(",").map((s) => s.trim()).filter(Boolean),
          expires_at: expires !== undefined && /^\d+$/.test(expires) ? Number(expires) : expires,
        }),
      };
    },
  },
  "keys revoke": {
    required: ["key"],
    optional: [],
    request: (v) => ({ method: "DELETE", path: `/keys/${id(v.key)}` }),
  },
  "chutes set-price": {
    required: ["chute"],
    optional: ["prompt-usd-per-m", "completion-usd-per-m", "cached-prompt-usd-per-m"],
    request: (v) => {
      const cached = v["cached-prompt-usd-per-m"];
      return {
        method: "PATCH",
        path: `/chutes/${id(v.chute)}/price`,
        body: defined({
          prompt_usd_per_m: v["prompt-usd-per-m"],
          completion_usd_per_m: v["completion-usd-per-m"],
          cached_prompt_usd_per_m: cached === "none" ? null : cached,
        }),
      };
    },
  },
  "miners add": {
    required: ["hotkey"],
    optional: ["name", "coldkey"],
    request: (v) => ({ method: "POST", path: "/miners", body: defined({ hotkey: v.hotkey, name: v.name, coldkey: v.coldkey }) }),
  },
  "miners ban": {
    required: ["hotkey"],
    optional: ["reason"],
    request: (v) => ({ method: "POST", path: `/miners/${id(v.hotkey)}/ban`, body: defined({ reason: v.reason }) }),
  },
  "miners unban": {
    required: ["hotkey"],
    optional: [],
    request: (v) => ({ method: "POST", path: `/miners/${id(v.hotkey)}/unban` }),
  },
  "miners list": {
    required: [],
    optional: ["status", "source"],
    request: (v) => {
      const query = new URLSearchParams();
      if (v.status) query.set("status", v.status);
      if (v.source) query.set("source", v.source);
      return { method: "GET", path: `/miners${query.size ? `?${query}` : ""}` };
    },
  },
  "miners import": {
    required: ["file"],
    optional: [],
    request: (v) => ({ method: "POST", path: "/miners/import", body: snapshotFile(v.file ?? "") }),
  },
};

class CliError extends Error {}

/** A metagraph snapshot file's JSON (the gateway validates it and names any bad field). */
function snapshotFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new CliError(`Cannot read ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${path} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new CliError(`${path} is not a metagraph snapshot (a JSON object with netuid, block and neurons).`);
  return json as Record<string, unknown>;
}

function readEnvFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const m = /^\s*([A-Z0-9_]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

function adminSecret(): string {
  const fromEnv = process.env.SLUICE_ADMIN_SECRET;
  if (fromEnv) return fromEnv;
  const local = existsSync(SECRETS_ENV) ? readEnvFile(SECRETS_ENV).ADMIN_JWT_SECRET : undefined;
  if (local) return local;
  throw new CliError("No admin secret: set SLUICE_ADMIN_SECRET to the gateway's ADMIN_JWT_SECRET (or run npm start once for a local one).");
}

/** The admin API's base URL from a gateway origin (a trailing /v1 is accepted too). */
function adminBase(flag: string | undefined): string {
  let url = flag ?? process.env.SLUICE_URL;
  if (!url && existsSync(DEV_JSON)) {
    const dev = JSON.parse(readFileSync(DEV_JSON, "utf8")) as { baseURL?: unknown };
    if (typeof dev.baseURL === "string") url = dev.baseURL;
  }
  if (!url) throw new CliError("No gateway URL: pass --url, set SLUICE_URL, or run npm start (it writes .sluice/dev.json).");
  return `${url.replace(/\/+$/, "").replace(/\/v1$/, "")}/v1/admin`;
}

async function adminToken(secret: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(`cli:${userInfo().username}`)
    .setAudience("sluice-admin")
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(secret));
}

async function call(base: string, secret: string, req: ApiRequest): Promise<unknown> {
  const url = `${base}${req.path}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: req.method,
      headers: { authorization: `Bearer ${await adminToken(secret)}`, ...(req.body ? { "content-type": "application/json" } : {}) },
      body: req.body ? JSON.stringify(req.body) : undefined,
    });
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : String(err);
    throw new CliError(`Could not reach the gateway at ${url}: ${cause}`);
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: reported as text below
  }
  if (!res.ok) {
    const error = (body as { error?: { message?: unknown; code?: unknown; param?: unknown } } | null)?.error;
    const message = typeof error?.message === "string" ? error.message : text.slice(0, 500) || res.statusText;
    const detail = [`HTTP ${res.status}`, typeof error?.code === "string" ? `code ${error.code}` : null, typeof error?.param === "string" ? `param ${error.param}` : null];
    throw new CliError(`${message} (${detail.filter(Boolean).join(", ")})`);
  }
  return body;
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CliError(`${err instanceof Error ? err.message : String(err)}\nRun 'npm run admin -- help' for usage.`);
  }
  const { values, positionals } = parsed;
  const name = positionals.join(" ");
  if (values.help || name === "" || name === "help") {
    console.log(HELP);
    return;
  }
  const command = COMMANDS[name];
  if (!command) throw new CliError(`Unknown command '${name}'. Run 'npm run admin -- help' for usage.`);
  const given = Object.keys(values).filter((k): k is Option => k !== "url" && k !== "help");
  const allowed: readonly Option[] = [...command.required, ...command.optional];
  const extra = given.filter((k) => !allowed.includes(k));
  if (extra.length) throw new CliError(`'${name}' does not take ${extra.map((k) => `--${k}`).join(", ")}. Run 'npm run admin -- help'.`);
  const missing = command.required.filter((k) => !values[k]);
  if (missing.length) throw new CliError(`'${name}' needs ${missing.map((k) => `--${k}`).join(", ")}.`);
  const result = await call(adminBase(values.url), adminSecret(), command.request(values));
  console.log(JSON.stringify(result, null, 2));
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
