import { parseArgs } from "node:util";
import { MinerAgent } from "./agent.ts";
import { loadConfig } from "./config.ts";
import { log } from "./log.ts";

const USAGE = `sluice-miner — the Sluice miner agent

Usage:
  sluice-miner run --config <file>   connect to the gateway and serve the configured chutes

SIGTERM or Ctrl-C drains: no new work is taken, in-flight requests finish, then the agent exits.`;

export async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { config: { type: "string", short: "c" }, help: { type: "boolean", short: "h" } },
  });
  const command = positionals[0];
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (command !== "run") {
    console.error(`Unknown command '${command}'.\n\n${USAGE}`);
    return 2;
  }
  if (!values.config) {
    console.error("Missing --config <file>.");
    return 2;
  }
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
