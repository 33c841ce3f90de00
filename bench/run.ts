/**
 * `npm run bench`: Sluice side by side with a direct upstream, nginx and Portkey, and the
 * built-in llama.cpp engine with and without the gateway (issue 7). Starts everything on
 * 127.0.0.1, runs bounded loads, stops everything, prints a table and writes bench/results.md.
 *
 *   npm run bench                        the full run (about 5-7 minutes)
 *   npm run bench -- --quick             short loads, for development (writes no file unless --out)
 *   npm run bench -- --rows=direct,sluice   only these rows
 *   npm run bench -- --rows=fleet        only the fleet simulator's scale run (1,000 agents, 2,000 streams)
 *   npm run bench -- --out=path.md       write the results there instead
 *   npm run bench -- --no-install        skip the nginx row rather than apt-get install it
 *   npm run bench -- --cpu-prof=DIR      CPU profiles of the Sluice rows: workerd's isolates through
 *                                        its inspector, per phase, and the agent (Node --cpu-prof)
 */
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ROWS, runBench, type RowId } from "./bench.ts";
import { PROFILES } from "./profile.ts";
import { render } from "./report/render.ts";
import { writeResults } from "./report/results-file.ts";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    rows: { type: "string" },
    out: { type: "string" },
    "no-install": { type: "boolean", default: false },
    "cpu-prof": { type: "string" },
  },
});

// `fleet` is the scale run (bench/fleet), not a row of the table; it is asked for the same way.
const known = [...ROWS.map((r) => r.id), "fleet"];
const rows = values.rows ? values.rows.split(",").map((s) => s.trim()) : known;
const unknown = rows.filter((r) => !known.includes(r));
if (unknown.length > 0) {
  console.error(`unknown rows: ${unknown.join(", ")} (known: ${known.join(", ")})`);
  process.exit(2);
}

// Ctrl-C: exit normally so every process the bench started is stopped (see targets/child.ts).
process.once("SIGINT", () => process.exit(130));
process.once("SIGTERM", () => process.exit(143));

if (values["cpu-prof"]) mkdirSync(values["cpu-prof"], { recursive: true });
const profile = values.quick ? PROFILES.quick : PROFILES.default;
const run = await runBench({
  profile,
  rows: rows.filter((r) => r !== "fleet") as RowId[],
  fleet: rows.includes("fleet"),
  installNginx: !values["no-install"],
  ...(values["cpu-prof"] ? { cpuProfDir: resolve(values["cpu-prof"]) } : {}),
  log: (line) => console.log(`· ${line}`),
});
const report = render(run);
console.log(`\n${report}\n`);
const out = values.out ?? (values.quick ? undefined : fileURLToPath(new URL("./results.md", import.meta.url)));
if (out) {
  await writeResults(out, report);
  console.log(`written to ${out}`);
} else {
  console.log("quick run: no results file written (pass --out=FILE to write one)");
}
process.exit(0);
