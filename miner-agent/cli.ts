import { relative } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { z } from "zod";
import { MinerAgent } from "./agent.ts";
import { loadConfig } from "./config.ts";
import { CONFIG_FILE, DEFAULT_GATEWAY, initMiner } from "./init.ts";
import { log } from "./log.ts";
import { collectStatus, renderStatus, statusJson } from "./status-view.ts";

/** Exit codes: 0 ok, 1 failure, 2 usage error. `run` returns -1: the process keeps running. */
const OK = 0;
const FAILED = 1;
const USAGE_ERROR = 2;

const USAGE = {
  main: `sluice-miner — the Sluice miner agent

Usage:
  sluice-miner init [--dir <dir>] [--gateway <url>] [--force]   create a hotkey and a commented config
  sluice-miner run --config <file>                              connect to the gateway and serve
  sluice-miner status [--config <file>] [--json]                what the running agent is doing

Run \`sluice-miner <command> --help\` for a command's options.`,
  init: `Usage: sluice-miner init [--dir <dir>] [--gateway <url>] [--force]

Creates <dir>/hotkey.json (this miner's sr25519 hotkey, mode 0600) and <dir>/${CONFIG_FILE}
(a config explaining every field, with examples), then prints the hotkey's SS58 address.
An existing hotkey is never replaced: it is kept and reused.

  --dir <dir>        where to write them (default: the current directory)
  --gateway <url>    the gateway URL written into the config (default ${DEFAULT_GATEWAY})
  --force            overwrite an existing config (the hotkey is still kept)`,
  run: `Usage: sluice-miner run --config <file>

Connects to the gateway and serves the configured chutes (and deploy offers, when configured).
Logs are JSON lines on stdout. SIGTERM or Ctrl-C drains: no new work is taken, in-flight requests
finish (up to drainTimeoutMs), then the agent exits 0.

  --config, -c <file>   the config \`sluice-miner init\` wrote`,
  status: `Usage: sluice-miner status [--config <file>] [--json]

Shows whether the agent is running (its process exists and it updated its status file within
10 s; otherwise its last known state), its gateway connection, instances (capacity, in-flight
jobs, requests and tokens served, draining), deploys in progress, GPUs, and the miner's earnings
as the gateway reports them.

  --config, -c <file>   the agent's config (default ./${CONFIG_FILE})
  --json                print one JSON object instead`,
};

type Command = keyof typeof USAGE & ("init" | "run" | "status");
type Options = NonNullable<ParseArgsConfig["options"]>;

function usageError(message: string, usage: string): number {
  console.error(`${message}\n\n${usage}`);
  return USAGE_ERROR;
}

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** Parses a command's options; a number (the exit code) when it already answered: help or a usage error. */
function parse(command: Command, args: string[], options: Options): Values | number {
  try {
    const parsed = parseArgs({ args, options: { ...options, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true });
    const values: Values = parsed.values;
    const positionals = parsed.positionals;
    if (values.help) {
      console.log(USAGE[command]);
      return OK;
    }
    if (positionals.length) return usageError(`Unexpected argument '${positionals[0]}'.`, USAGE[command]);
    return values;
  } catch (err) {
    // Node's parse errors go on to explain `--`; the first sentence is what the user needs.
    const message = err instanceof Error ? err.message.replace(/\. To specify a positional argument[\s\S]*$/, ".") : String(err);
    return usageError(message, USAGE[command]);
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    console.log(USAGE.main);
    return command === undefined ? USAGE_ERROR : OK;
  }
  try {
    switch (command) {
      case "init":
        return await init(args);
      case "run":
        return await run(args);
      case "status":
        return await status(args);
      default:
        return usageError(`Unknown command '${command}'.`, USAGE.main);
    }
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    return FAILED;
  }
}

async function init(args: string[]): Promise<number> {
  const values = parse("init", args, { dir: { type: "string" }, gateway: { type: "string" }, force: { type: "boolean" } });
  if (typeof values === "number") return values;
  const gateway = typeof values.gateway === "string" ? values.gateway : DEFAULT_GATEWAY;
  if (!z.url({ protocol: /^https?$/ }).safeParse(gateway).success) return usageError(`--gateway must be an http(s) URL, got '${gateway}'.`, USAGE.init);
  const r = await initMiner({ dir: typeof values.dir === "string" ? values.dir : ".", gateway, force: values.force === true });
  const shown = (p: string) => (relative(process.cwd(), p).startsWith("..") ? p : relative(process.cwd(), p) || p);
  console.log(r.hotkeyCreated ? `Created hotkey ${shown(r.hotkeyPath)} (mode 0600).` : `Kept the existing hotkey ${shown(r.hotkeyPath)} (a hotkey is never replaced).`);
  console.log(
    r.config === "kept" ? `Kept the existing config ${shown(r.configPath)} (--force rewrites it).`
    : `${r.config === "created" ? "Wrote" : "Rewrote"} the config ${shown(r.configPath)}: edit it to add the chutes this host serves.`,
  );
  console.log(`
Hotkey SS58 address (this miner's id):
  ${r.address}

Next:
  1. Ask the gateway's operator to register the hotkey:
       npm run admin -- miners add --hotkey ${r.address}
  2. Add chutes (or a deploy section) to ${shown(r.configPath)}, then start the agent:
       sluice-miner run --config ${shown(r.configPath)}
  3. Watch it:
       sluice-miner status --config ${shown(r.configPath)}
Back up ${shown(r.hotkeyPath)}: a new hotkey is a new miner.`);
  return OK;
}

async function run(args: string[]): Promise<number> {
  const values = parse("run", args, { config: { type: "string", short: "c" } });
  if (typeof values === "number") return values;
  if (typeof values.config !== "string") return usageError("Missing --config <file>.", USAGE.run);
  const config = await loadConfig(values.config);
  const agent = new MinerAgent(config);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("agent.signal", { signal });
    void agent.drain().then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  await agent.start();
  return -1; // keeps running
}

async function status(args: string[]): Promise<number> {
  const values = parse("status", args, { config: { type: "string", short: "c" }, json: { type: "boolean" } });
  if (typeof values === "number") return values;
  const report = await collectStatus(typeof values.config === "string" ? values.config : CONFIG_FILE);
  console.log(values.json ? JSON.stringify(statusJson(report), null, 2) : renderStatus(report));
  return OK;
}
