/**
 * The fleet simulator's process (started by bench/fleet/run.ts): hosts one LightAgent per
 * miner of its config. It connects the first agent alone and prints `FLEET_FIRST {...}` (the
 * bench reads the gateway's memory with one agent, whose costs are partly one-time ones), then
 * on SIGUSR2 the others, a bounded number at a time, and prints `FLEET_READY {...}` once every
 * agent is welcomed or `FLEET_FAILED {...}` when some are not within the connect timeout. On
 * SIGTERM (or when the bench's stdin goes away) it writes its FleetReport to the config's
 * reportPath, then disconnects every agent and exits.
 *
 *   node --import tsx bench/fleet/fleet-process.ts <config.json>
 */
import { readFile, writeFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fromHex, hotkeyFromSeed } from "../../protocol/index.ts";
import { FAILED_MARK, FIRST_MARK, FleetConfig, READY_MARK, type ReadyLine } from "./contract.ts";
import { LightAgent } from "./light-agent.ts";
import { Telemetry } from "./telemetry.ts";

const config = FleetConfig.parse(JSON.parse(await readFile(process.argv[2]!, "utf8")));
const telemetry = new Telemetry();
telemetry.install();

let stopping = false;
let lost = 0;
let refused = 0;
let chunkFrames = 0;
const agents = config.miners.map(
  (m) =>
    new LightAgent({
      gateway: config.gateway,
      hotkey: hotkeyFromSeed(fromHex(m.secretSeed)!),
      chute: config.chute,
      slots: config.slots,
      pacing: config.pacing,
      onLost: () => {
        if (!stopping) lost++;
      },
      onRefused: () => refused++,
      onChunk: () => chunkFrames++,
    }),
);
const readyCount = (): number => agents.reduce((n, a) => n + (a.ready ? 1 : 0), 0);

async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  // The report is written before anything is torn down, so the bench has it even if the
  // teardown outlives its grace period.
  const report = telemetry.report({ agents: agents.length, ready: readyCount(), lost, refused, chunkFrames, peakRssBytes: process.resourceUsage().maxRSS * 1024 });
  telemetry.markStopping();
  await writeFile(config.reportPath, JSON.stringify(report));
  // Each stop is bounded (the connection gives its close handshake 2 s).
  await Promise.all(agents.map((a) => a.stop()));
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown());
process.once("SIGINT", () => void shutdown());
// The bench holds our stdin open: when it goes away, so do we.
process.stdin.on("end", () => void shutdown()).resume();

/** Starts agents from `from` on, at most `concurrency` awaiting their welcome at once, until `until` are ready. */
async function connect(from: number, until: number, concurrency: number, deadline: number): Promise<number> {
  let started = from;
  let ready = readyCount();
  while (!stopping && performance.now() < deadline && ready < until) {
    while (started < until && started - ready < concurrency) agents[started++]!.start();
    await sleep(10);
    ready = readyCount();
  }
  return ready;
}

function announce(mark: string, ready: number, t0: number): void {
  const line: ReadyLine = { ready, agents: agents.length, connectMs: Math.round(performance.now() - t0) };
  if (!stopping) process.stdout.write(`${mark} ${JSON.stringify(line)}\n`);
}

const go = new Promise<void>((resolve) => process.once("SIGUSR2", () => resolve()));
let t0 = performance.now();
const first = await connect(0, 1, 1, t0 + config.connectTimeoutMs);
announce(first === 1 ? FIRST_MARK : FAILED_MARK, first, t0);
if (first === 1) {
  await go;
  // At most `connectConcurrency` handshakes at once: a thousand at once would measure a
  // thundering herd (and its auth timeouts) rather than a connected fleet.
  t0 = performance.now();
  const ready = await connect(1, agents.length, config.connectConcurrency, performance.now() + config.connectTimeoutMs);
  announce(ready === agents.length ? READY_MARK : FAILED_MARK, ready, t0);
}
