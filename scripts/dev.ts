/**
 * `npm start`: the whole platform on this machine. The gateway Worker in workerd (wrangler dev)
 * with its local D1 migrated and seeded and its Durable Objects; a funded dev account with an
 * API key; one miner agent serving the tiny generated model with the built-in llama.cpp engine.
 * Writes .sluice/dev.json and prints how to call it. Ctrl-C stops everything.
 * PORT (default 8787) and SLUICE_STATE_DIR (default .sluice) put a second one beside it.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { makeSeed, seedStatements, type Seed, TINY_CHUTE, writeMinerKey } from "./lib/seed.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const STATE = process.env.SLUICE_STATE_DIR ? resolve(process.env.SLUICE_STATE_DIR) : `${ROOT}/.sluice`;
/** The state directory as printed (relative to the project when it is inside it). */
const SHOWN = relative(ROOT, STATE).startsWith("..") ? STATE : relative(ROOT, STATE);
const PERSIST = `${STATE}/state`;
const PORT = Number(process.env.PORT ?? 8787);
const ORIGIN = `http://127.0.0.1:${PORT}`;
const WRANGLER = `${ROOT}/node_modules/wrangler/bin/wrangler.js`;
const wranglerEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" };

const children: ChildProcess[] = [];

function step(msg: string): void {
  console.log(`\x1b[36m▸\x1b[0m ${msg}`);
}

function wrangler(args: string[]): void {
  execFileSync(process.execPath, [WRANGLER, ...args], { cwd: ROOT, env: wranglerEnv, stdio: ["ignore", "ignore", "inherit"] });
}

/** Reuse the dev secrets across restarts (the local D1 keeps them), or make new ones. */
function loadOrMakeSeed(): Seed {
  const path = `${STATE}/secrets.json`;
  if (existsSync(path)) {
    const stored = JSON.parse(readFileSync(path, "utf8")) as Seed;
    // State from before miners had hotkeys gets a new miner; everything else is kept.
    if (stored.miners.every((m) => typeof m.secretSeed === "string")) return stored;
    const seed = { ...stored, miners: makeSeed().miners };
    writeFileSync(path, JSON.stringify(seed, null, 2), { mode: 0o600 });
    return seed;
  }
  const seed = makeSeed({ creditUsd: 10 });
  writeFileSync(path, JSON.stringify(seed, null, 2), { mode: 0o600 });
  return seed;
}

/**
 * The gateway's secrets for local runs (wrangler secrets in production), made once and reused:
 * `wrangler dev --env-file` reads them, and `npm run admin` signs its tokens with ADMIN_JWT_SECRET.
 */
function ensureSecretsEnv(): string {
  const path = `${STATE}/secrets.env`;
  if (!existsSync(path)) {
    const secret = () => randomBytes(32).toString("hex");
    writeFileSync(path, `ADMIN_JWT_SECRET=${secret()}\nPAYMENT_WEBHOOK_SECRET=${secret()}\n`, { mode: 0o600 });
  }
  return path;
}

function run(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => {
      if (line.trim()) console.log(`\x1b[2m[${name}]\x1b[0m ${line}`);
    });
  }
  child.on("exit", (code, signal) => {
    if (!stopping) {
      console.error(`${name} exited (${signal ?? code}); stopping.`);
      void stop(1);
    }
  });
  return child;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`Timed out waiting for ${what}.`);
}

let stopping = false;
async function stop(code: number): Promise<never> {
  stopping = true;
  for (const c of children.reverse()) c.kill("SIGTERM");
  await Promise.all(
    children.map((c) => (c.exitCode !== null ? null : new Promise((r) => { c.once("exit", r); setTimeout(() => { c.kill("SIGKILL"); r(null); }, 5000); }))),
  );
  process.exit(code);
}
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));

/**
 * Miniflare fetches a sample `Request.cf` object from Cloudflare on start and caches it here;
 * with no network that only prints an alarming stack trace, so give it a local one.
 */
function provideLocalCf(): void {
  const path = `${ROOT}/node_modules/.mf/cf.json`;
  if (existsSync(path)) return;
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify({ colo: "LOCAL", country: "XX", asn: 0, clientTcpRtt: 0, httpProtocol: "HTTP/1.1" }));
}

async function main(): Promise<void> {
  mkdirSync(STATE, { recursive: true });
  provideLocalCf();
  step("Generating the tiny model (models/tiny-sluice.gguf)");
  execFileSync(process.execPath, [`${ROOT}/scripts/make-tiny-model.mjs`], { cwd: ROOT, stdio: "inherit" });

  step("Migrating the local D1 database");
  wrangler(["d1", "migrations", "apply", "DB", "--local", "--persist-to", PERSIST]);
  const seed = loadOrMakeSeed();
  writeFileSync(`${STATE}/seed.sql`, seedStatements(seed).join(";\n") + ";\n");
  step("Seeding the dev account, its API key, the chute and the miner");
  wrangler(["d1", "execute", "DB", "--local", "--persist-to", PERSIST, "--file", `${STATE}/seed.sql`]);

  step(`Starting the gateway (wrangler dev) on ${ORIGIN}`);
  const secretsEnv = ensureSecretsEnv();
  run("gateway", process.execPath, [WRANGLER, "dev", "--ip", "127.0.0.1", "--port", String(PORT), "--persist-to", PERSIST, "--env-file", secretsEnv, "--log-level", "warn", "--show-interactive-dev-session=false"], wranglerEnv);
  await waitFor("the gateway", async () => (await fetch(`${ORIGIN}/health`)).ok, 60_000);

  const miner = seed.miners[0]!;
  await writeMinerKey(`${STATE}/miner-hotkey.json`, miner);
  const agentConfig = {
    gateway: ORIGIN,
    hotkeyFile: "miner-hotkey.json",
    gpus: "auto",
    chutes: [
      {
        chute: TINY_CHUTE.name,
        engine: { kind: "llama-cpp", modelPath: `${ROOT}/${TINY_CHUTE.modelRef}`, parallel: TINY_CHUTE.concurrency, contextSize: TINY_CHUTE.contextLength, threads: 1 },
      },
    ],
    // Chutes deployed through POST /v1/chutes with engine llama-cpp and a model file under models/.
    deploy: { maxInstances: 2, engines: { "llama-cpp": { modelDir: `${ROOT}/models`, threads: 1, parallel: 2 } } },
  };
  writeFileSync(`${STATE}/agent.json`, JSON.stringify(agentConfig, null, 2), { mode: 0o600 });
  step("Starting the miner agent (llama.cpp engine)");
  run("miner", process.execPath, [`${ROOT}/miner-agent/bin/sluice-miner.mjs`, "run", "--config", `${STATE}/agent.json`], process.env);

  const baseURL = `${ORIGIN}/v1`;
  const dev = { baseURL, apiKey: seed.apiKey, model: TINY_CHUTE.name };
  writeFileSync(`${STATE}/dev.json`, JSON.stringify(dev, null, 2) + "\n", { mode: 0o600 });
  await waitFor(
    "the miner to serve the model",
    async () => {
      const res = await fetch(`${baseURL}/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${seed.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ model: dev.model, prompt: "ready", max_tokens: 1 }),
      });
      return res.ok;
    },
    120_000,
  );
  console.log(`
\x1b[1mSluice is running.\x1b[0m
  gateway   ${ORIGIN}  (workerd via wrangler dev; local D1 + Durable Objects in ${SHOWN}/state)
  account   ${seed.accountId}, credit $${(seed.creditNano / 1e9).toFixed(2)}
  miner     ${miner.id} (hotkey in ${SHOWN}/miner-hotkey.json), serving ${dev.model} with llama.cpp (models/tiny-sluice.gguf)
            status: npm run miner -- status --config ${SHOWN}/agent.json
  settings  ${SHOWN}/dev.json  (baseURL, apiKey, model)
  operator  npm run admin -- help  (admin CLI; local secrets in ${SHOWN}/secrets.env)

Try it:
  curl ${baseURL}/chat/completions \\
    -H "Authorization: Bearer ${seed.apiKey}" \\
    -H "Content-Type: application/json" \\
    -d '{"model":"${dev.model}","messages":[{"role":"user","content":"Hello!"}],"max_tokens":32,"stream":true}'

Ctrl-C stops everything.
`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  void stop(1);
});
