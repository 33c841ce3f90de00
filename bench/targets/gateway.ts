import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Miniflare } from "miniflare";
import { z } from "zod";
import { migrationStatements } from "../../scripts/lib/migrations.ts";
import { seedStatements, type Seed } from "../../scripts/lib/seed.ts";
import { gatewayWorkerOptions, TEST_SECRETS } from "../../test/support/gateway.ts";
import { ROOT } from "../../test/support/paths.ts";
import { commandName, descendants } from "../proc.ts";

/**
 * Per-key rate limits stay on (their cost is part of the path) but far above what a run sends;
 * the platform's defaults would otherwise turn most of the load into 429s.
 */
const BENCH_VARS = { RATE_LIMIT_RPM: "1000000000", RATE_LIMIT_TPM: "1000000000000" };

/** The first few lines of the gateway's output that are not its routine info logs. */
class UnusualLines {
  readonly lines: string[] = [];

  /** A line splitter for one output stream. */
  reader(): (text: string) => void {
    let partial = "";
    return (text) => {
      if (this.lines.length >= 4) return;
      const parts = (partial + text).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) {
        const routine = line === "" || (line.startsWith("{") && line.includes('"level":"info"'));
        if (!routine && this.lines.length < 4) this.lines.push(line.length > 240 ? `${line.slice(0, 240)}...` : line);
      }
    };
  }
}

/** The gateway as every Sluice measurement runs it, migrated and seeded. */
export interface BenchGateway {
  mf: Miniflare;
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  url: string;
  /** The workerd process(es) Miniflare started: the gateway's memory and CPU. */
  workerd: number[];
  /** A scratch directory removed by close() (Durable Object and D1 files live in it too). */
  dir: string;
  /** The gateway's first output lines that were not routine info logs. */
  unusualLines(): string[];
  close(): Promise<void>;
}

/**
 * The wrangler-built Worker bundle in workerd through Miniflare (no `wrangler dev` proxy in
 * front), served on a socket of its own: Miniflare's dev entry Worker, a JavaScript hop that
 * production does not have (it cost about 0.6 ms of CPU per request here), is bypassed. With D1 and Durable Object storage on disk as the tests and `npm start` run it, D1
 * migrated and seeded with `seed`, and the bench's raised rate limits.
 */
export async function startBenchGateway(opts: { seed: Seed; inspectorPort?: number; scriptPath?: string }): Promise<BenchGateway> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-bench-gw-"));
  const unusual = new UnusualLines();
  const mf = new Miniflare({
    ...(opts.inspectorPort ? { inspectorPort: opts.inspectorPort } : {}),
    ...gatewayWorkerOptions({ ...TEST_SECRETS, ...BENCH_VARS }, opts.scriptPath),
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    // The gateway logs a line per request: only warnings, errors and non-JSON lines are kept.
    handleRuntimeStdio(stdout, stderr) {
      const out = unusual.reader();
      const err = unusual.reader();
      stdout.on("data", (d: Buffer) => out(d.toString("utf8")));
      stderr.on("data", (d: Buffer) => err(d.toString("utf8")));
    },
    d1Persist: `${dir}/d1`,
    durableObjectsPersist: `${dir}/do`,
  });
  const close = async (): Promise<void> => {
    await mf.dispose();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await mf.ready;
    const url = (await mf.unsafeGetDirectURL()).toString().replace(/\/$/, "");
    const db = await mf.getD1Database("DB");
    const statements = [...(await migrationStatements(`${ROOT}/migrations`)), ...seedStatements(opts.seed)];
    await db.batch(statements.map((s) => db.prepare(s)));
    const workerd = descendants(process.pid).filter((pid) => commandName(pid) === "workerd");
    if (workerd.length === 0) throw new Error("cannot find the workerd process Miniflare started");
    return { mf, url, workerd, dir, unusualLines: () => unusual.lines, close };
  } catch (err) {
    await close();
    throw err;
  }
}

const ChuteLive = z.object({
  instances: z.array(z.object({ id: z.string() })),
  utilization: z.object({ inflight: z.number() }),
  stats: z.object({ refused: z.number() }),
});
export type ChuteLive = z.infer<typeof ChuteLive>;

/**
 * What the chute's router has live (instances, leases in flight, refusals), as the chutes API
 * shows it to the chute's owner. Not through Miniflare's Durable Object proxy: that blocks this
 * thread (Atomics.wait) until workerd answers, while workerd, once its log pipe to this process
 * is full, waits for this thread to read it; under load the two deadlock.
 */
export async function chuteLive(gateway: { url: string }, apiKey: string, chuteId: string): Promise<ChuteLive> {
  const res = await fetch(`${gateway.url}/v1/chutes/${encodeURIComponent(chuteId)}`, {
    headers: { authorization: `Bearer ${apiKey}` },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`GET /v1/chutes/${chuteId} answered ${res.status}: ${text.slice(0, 200)}`);
  return ChuteLive.parse(JSON.parse(text));
}

/** Waits until the chute's router lists at least `count` instances. */
export async function waitForInstances(gateway: { url: string }, apiKey: string, chuteId: string, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const listed = (await chuteLive(gateway, apiKey, chuteId)).instances.length;
    if (listed >= count) return;
    if (Date.now() > deadline) throw new Error(`${listed} of ${count} instances of ${chuteId} reached the router within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
