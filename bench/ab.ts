/**
 * `npm run bench:ab -- [REV] [--phase=small|stream|paced]`: the gateway and agent of the working
 * tree beside those of git revision REV (default HEAD), against one synthetic upstream, measured
 * in turns (A B, B A, ...). Comparing two builds in one
 * run, a change's effect shows apart from the machine's drift in speed: the same code twice read
 * 0.4% and 1.2% apart in workerd CPU per request here (1% and 4.5% in requests/s), where two runs
 * of `npm run bench` an hour apart differ by tens of percent. But two single runs read -9% and
 * -6% for changes whose repeats read -2% and +1%: believe an effect only when a second run agrees.
 *
 *   AB_BENCH_SLICE_MS (default 3000) and AB_BENCH_TURNS (default 8) size the load.
 */
import { parseArgs } from "node:util";
import { renderAb, runAb, type AbPhase } from "./ab/run.ts";
import { PROFILES } from "./profile.ts";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { phase: { type: "string", default: "small" } } });
const phase = values.phase as AbPhase;
if (phase !== "small" && phase !== "stream" && phase !== "paced") throw new Error(`--phase is small, stream or paced, not ${values.phase}`);
const sliceMs = Number(process.env.AB_BENCH_SLICE_MS ?? 3_000);
const turns = Number(process.env.AB_BENCH_TURNS ?? 8);
const p = PROFILES.default[phase];
const result = await runAb({ base: positionals[0] ?? "HEAD", phase, load: { ...p, durationMs: sliceMs * turns, warmupMs: Math.min(p.warmupMs, 1_000) }, turns });
console.log(`\n${renderAb(result)}`);
