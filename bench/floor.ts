/**
 * `npm run bench:floor`: how much of the Sluice gateway's CPU per small request is Sluice's own
 * work, and how much the fixed shape of the path costs in workerd whatever runs in it.
 *
 * Two targets against one synthetic upstream, measured in turns (A B, B A, ...) as the main
 * bench does:
 * - the floor: a harness Worker (bench/floor/) with the same hops and none of the work (a
 *   Worker, one Durable Object RPC, the agent's hibernated WebSocket, an agent process that
 *   calls the upstream);
 * - Sluice's full path, as row 4 of `npm run bench` (its small-request load).
 * Prints req/s, latency and the CPU per request of workerd and of the agent for each, and the
 * difference: the workerd CPU that Sluice's own work adds per request.
 *
 *   FLOOR_BENCH_SLICE_MS (default 4000) and FLOOR_BENCH_TURNS (default 4) size the load.
 */
import { execFileSync } from "node:child_process";
import { ROOT } from "../test/support/paths.ts";
import { renderFloor, runFloorBench } from "./floor/run.ts";
import { PROFILES } from "./profile.ts";

const sliceMs = Number(process.env.FLOOR_BENCH_SLICE_MS ?? 4_000);
const turns = Number(process.env.FLOOR_BENCH_TURNS ?? 4);

execFileSync(process.execPath, [`${ROOT}/scripts/build-worker.mjs`], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
const result = await runFloorBench({ small: { ...PROFILES.default.small, durationMs: sliceMs * turns }, turns });
console.log(`\n${renderFloor(result)}`);
