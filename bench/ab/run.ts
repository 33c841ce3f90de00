/**
 * The A/B measurement behind `npm run bench:ab` (see bench/ab.ts): the gateway and agent at a git
 * revision beside the working tree's, against one synthetic upstream, measured in turns.
 */
import { execFileSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { AGENT_BIN, ROOT, WORKER_BUNDLE } from "../../test/support/paths.ts";
import type { ChatBody } from "../load/http-client.ts";
import { measureTurns, type TurnRow, type TurnTarget } from "../load/turns.ts";
import { PACED_TOKEN_MS, type Phase } from "../profile.ts";
import { PACED_CHUTE, startSluice, syntheticEngine, SYNTHETIC_CHUTE } from "../targets/sluice.ts";
import type { RunningTarget } from "../targets/types.ts";
import { startUpstream } from "../targets/upstream.ts";

/** small: non-streaming requests; stream: 256-token streams from the instant upstream; paced: from the paced one. */
export type AbPhase = "small" | "stream" | "paced";

export interface AbOptions {
  /** The git revision the working tree is compared with. */
  base: string;
  phase: AbPhase;
  load: Phase;
  turns: number;
}

export interface AbResult {
  options: AbOptions;
  /** The revision's full commit id. */
  baseCommit: string;
  base: TurnRow;
  change: TurnRow;
}

const git = (args: string[], cwd = ROOT): string => execFileSync("git", args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();

/**
 * Checks `rev` out in a scratch worktree sharing node_modules (its agent runs from there), and
 * bundles its gateway as `wrangler deploy` would into .build/ab-base (workerd takes modules from
 * within the project's directory only). `remove` takes the worktree away.
 */
async function checkOut(rev: string, dir: string): Promise<{ bundle: string; agentBin: string; remove: () => Promise<void> }> {
  const tree = join(dir, "tree");
  git(["worktree", "add", "--detach", "--force", tree, rev]);
  const remove = async () => void git(["worktree", "remove", "--force", tree]);
  try {
    await symlink(join(ROOT, "node_modules"), join(tree, "node_modules"), "dir");
    execFileSync(process.execPath, [join(tree, "scripts/build-worker.mjs")], { cwd: tree, stdio: ["ignore", "ignore", "inherit"] });
    const bundle = join(ROOT, ".build/ab-base/index.js");
    await mkdir(dirname(bundle), { recursive: true });
    await copyFile(join(tree, ".build/worker/index.js"), bundle);
    return { bundle, agentBin: join(tree, relative(ROOT, AGENT_BIN)), remove };
  } catch (err) {
    await remove();
    throw err;
  }
}

/** Builds both gateways, starts each with its own agent, and measures them in turns. */
export async function runAb(options: AbOptions): Promise<AbResult> {
  const baseCommit = git(["rev-parse", "--verify", `${options.base}^{commit}`]);
  const dir = await mkdtemp(join(tmpdir(), "sluice-ab-"));
  const closers: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  try {
    const checkout = await checkOut(baseCommit, dir);
    closers.unshift(checkout.remove);
    execFileSync(process.execPath, [join(ROOT, "scripts/build-worker.mjs")], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    const upstream = await startUpstream(options.phase === "paced" ? { delayPerTokenMs: PACED_TOKEN_MS } : {});
    closers.unshift(() => upstream.close());
    const chute = options.phase === "paced" ? PACED_CHUTE : SYNTHETIC_CHUTE;
    const start = async (workerBundle: string, agentBin: string): Promise<RunningTarget> => {
      const t = await startSluice({ chute, engine: syntheticEngine(upstream.url), creditUsd: 100_000, workerBundle, agentBin });
      closers.unshift(() => t.close());
      return t;
    };
    const stream = options.phase !== "small";
    const body = (i: number): ChatBody => ({ max_tokens: options.load.maxTokens, stream, seed: i, temperature: 0.7 });
    const target = (label: string, t: RunningTarget): TurnTarget => ({
      label,
      connect: () => {
        const c = t.client(options.load.concurrency, 30_000);
        return { task: (i) => (stream ? c.stream(body(i)) : c.complete(body(i))), close: () => c.close() };
      },
      gateway: t.gatewayPids(),
      engine: t.agentPids?.() ?? [],
    });
    const [base, change] = await measureTurns(
      [target(`base (${options.base} = ${baseCommit.slice(0, 9)})`, await start(checkout.bundle, checkout.agentBin)), target("change (working tree)", await start(WORKER_BUNDLE, AGENT_BIN))],
      options.load,
      options.turns,
    );
    return { options, baseCommit, base: base!, change: change! };
  } finally {
    for (const close of closers) await close().catch(() => undefined);
  }
}

const fixed = (v: number, digits: number): string => (Number.isFinite(v) ? v.toFixed(digits) : "—");
const pct = (b: number, a: number): string => (a > 0 && Number.isFinite(b) ? `${b >= a ? "+" : ""}${((100 * (b - a)) / a).toFixed(1)}%` : "—");

export function renderAb(r: AbResult): string {
  const { load, turns, phase } = r.options;
  const what = {
    small: `small non-streaming requests (max_tokens ${load.maxTokens})`,
    stream: `${load.maxTokens}-token streams from an upstream that writes them at once`,
    paced: `${load.maxTokens}-token streams from an upstream pacing tokens ${PACED_TOKEN_MS} ms apart`,
  }[phase];
  const lines = [
    `${what}, concurrency ${load.concurrency}, ${turns} slices of ${load.durationMs / turns / 1000} s per gateway, in turns (each with its agent at its own revision):`,
    "",
    "| gateway | req/s | p50 ms | p99 ms | TTFT p50 ms | TTFT p99 ms | errors | workerd CPU ms/request | agent CPU ms/request |",
    "| ------- | ----: | -----: | -----: | ----------: | ----------: | -----: | ---------------------: | -------------------: |",
  ];
  for (const x of [r.base, r.change]) {
    const l = x.load;
    lines.push(
      `| ${x.label} | ${fixed(l.rps, 0)} | ${fixed(l.latencyP50, 2)} | ${fixed(l.latencyP99, 1)} | ${fixed(l.ttftP50, 2)} | ${fixed(l.ttftP99, 1)} | ` +
        `${l.errors}/${l.requests} | ${fixed(x.gatewayCpuMsPerRequest, 3)} | ${fixed(x.engineCpuMsPerRequest, 3)} |`,
    );
  }
  const [a, b] = [r.base, r.change];
  lines.push(
    "",
    `change vs base: req/s ${pct(b.load.rps, a.load.rps)}, workerd CPU per request ${pct(b.gatewayCpuMsPerRequest, a.gatewayCpuMsPerRequest)}, ` +
      `p50 ${pct(b.load.latencyP50, a.load.latencyP50)}${phase === "small" ? "" : `, TTFT p50 ${pct(b.load.ttftP50, a.load.ttftP50)}, tokens/s ${pct(b.load.tokensPerSec, a.load.tokensPerSec)}`}.`,
  );
  return lines.join("\n");
}
