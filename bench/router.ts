/**
 * `npm run bench:router`: where one ChuteRouter Durable Object saturates. Bundles a harness
 * Worker (bench/router/) with wrangler, runs it in workerd through Miniflare, and drives one
 * router with acquire/release pairs (what every request costs the router) from more and more
 * concurrent callers. Prints pairs/s per concurrency; the plateau is one router's ceiling.
 */
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { ROOT } from "../test/support/paths.ts";

const OUT = `${ROOT}/.build/router-bench`;
const PAIRS_PER_CALL = 50;
const DURATION_MS = Number(process.env.ROUTER_BENCH_MS ?? 3_000);
const CONCURRENCY = [1, 4, 16, 64];

execFileSync(
  process.execPath,
  [`${ROOT}/node_modules/wrangler/bin/wrangler.js`, "deploy", "--dry-run", "--config", "bench/router/wrangler.jsonc", "--outdir", OUT],
  { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "warn" } },
);

const persist = await mkdtemp(join(tmpdir(), "sluice-router-bench-"));
const mf = new Miniflare({
  host: "127.0.0.1",
  port: 0,
  modules: true,
  scriptPath: `${OUT}/worker.js`,
  compatibilityDate: "2025-12-01",
  durableObjects: { CHUTE_ROUTER: { className: "ChuteRouter", useSQLite: true } },
  durableObjectsPersist: process.env.ROUTER_BENCH_MEMORY ? false : `${persist}/do`,
});
try {
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const setup = await fetch(`${url}/setup?instances=8`);
  if (!setup.ok) throw new Error(`setup failed: ${setup.status} ${await setup.text()}`);
  await (await fetch(`${url}/run?n=${PAIRS_PER_CALL}`)).text(); // warm-up

  const rows: { concurrency: number; pairsPerSecond: number; usPerPair: number }[] = [];
  for (const concurrency of CONCURRENCY) {
    let pairs = 0;
    const started = performance.now();
    const until = started + DURATION_MS;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < until) {
          const res = await fetch(`${url}/${process.env.ROUTER_BENCH_PATH ?? "run"}?n=${PAIRS_PER_CALL}`);
          pairs += ((await res.json()) as { ok: number }).ok;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    rows.push({ concurrency, pairsPerSecond: pairs / seconds, usPerPair: (seconds * 1e6) / pairs });
  }
  console.log(`\nOne ChuteRouter (8 instances), acquire+release pairs driven from one Worker, ${PAIRS_PER_CALL} pairs per call:\n`);
  console.log("| callers | pairs/s | µs per pair |");
  console.log("| ------: | ------: | ----------: |");
  for (const r of rows) console.log(`| ${r.concurrency} | ${Math.round(r.pairsPerSecond).toLocaleString("en-US")} | ${r.usPerPair.toFixed(1)} |`);
  const best = Math.max(...rows.map((r) => r.pairsPerSecond));
  console.log(`\nCeiling here: about ${Math.round(best).toLocaleString("en-US")} requests/s per router (each request is one acquire and one release).`);
} finally {
  await mf.dispose();
  await rm(persist, { recursive: true, force: true });
}
