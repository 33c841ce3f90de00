import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeSeed, minerNamed, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, tinyEngine, type AgentOptions, type AgentProcess } from "../support/agent-process.ts";
import { startBrokenAgent, type BrokenAgent } from "../support/broken-agent.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { ledgerOf } from "../support/ledger.ts";
import { waitForInstances } from "../support/router.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../support/upstream-double.ts";

/**
 * Chaos: a bounded load of concurrent requests while agents are killed and restarted, stalled
 * (process stopped: no reads, no heartbeats) and resumed, and a broken agent answers jobs with
 * malformed frames. Every request must end, within its deadline, in a complete answer or a
 * clean OpenAI-shaped error; the ledger must reconcile; the gateway must keep serving.
 */
const LOAD_MS = 16_000;
const WORKERS = 10;
const REQUEST_DEADLINE_MS = 30_000;
const UPSTREAM_MINERS = ["miner-a", "miner-b", "miner-c"];
const LLAMA_MINER = "miner-d";
const BROKEN_MINER = "miner-e";
const CREDIT_USD = 50;

let gw: Gateway;
const upstreams = new Map<string, UpstreamDouble>();
const running = new Map<string, AgentProcess>();
const broken: BrokenAgent[] = [];

function agentOptions(minerId: string): AgentOptions {
  const engine =
    minerId === LLAMA_MINER
      ? tinyEngine(2)
      : { kind: "openai-upstream" as const, baseURL: upstreams.get(minerId)!.url, model: "m", parallel: 4 };
  return { gateway: gw.url, miner: minerNamed(gw.seed, minerId), engine, heartbeatMs: 300 };
}

async function start(minerId: string): Promise<void> {
  running.set(minerId, await startAgent(agentOptions(minerId)));
}

function kill(minerId: string): void {
  running.get(minerId)?.kill("SIGKILL");
  running.delete(minerId);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  gw = await startGateway({
    seed: makeSeed({ minerNames: [...UPSTREAM_MINERS, LLAMA_MINER, BROKEN_MINER], creditUsd: CREDIT_USD }),
    vars: {
      MINER_STALE_AFTER_MS: "1500",
      STREAM_IDLE_TIMEOUT_MS: "3000",
      FIRST_TOKEN_TIMEOUT_MS: "8000",
      QUEUE_WAIT_MS: "2000",
      RATE_LIMIT_RPM: "0",
    },
  });
  for (const [i, m] of UPSTREAM_MINERS.entries()) upstreams.set(m, await startUpstreamDouble({ delayPerTokenMs: 4 + 3 * i }));
  await Promise.all([...UPSTREAM_MINERS, LLAMA_MINER].map(start));
  await waitForInstances(gw, TINY_CHUTE.id, 4);
});

afterAll(async () => {
  for (const a of running.values()) {
    a.child.kill("SIGCONT");
    a.kill();
  }
  for (const b of broken) b.close();
  await Promise.all([...upstreams.values()].map((u) => u.close()));
  await gw?.close();
});

type Outcome = "completed" | "failed_cleanly" | "hung" | "broken";

/** One request, classified by what the client saw. */
async function oneRequest(n: number): Promise<{ outcome: Outcome; detail?: string }> {
  const stream = n % 3 !== 0;
  const maxTokens = 10 + ((n * 7919) % 50);
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: TINY_CHUTE.name, messages: [{ role: "user", content: `request ${n}` }], max_tokens: maxTokens, stream, seed: n }),
      signal: AbortSignal.timeout(REQUEST_DEADLINE_MS),
    });
    text = await res.text();
  } catch (err) {
    return { outcome: (err as Error).name === "TimeoutError" ? "hung" : "broken", detail: String(err) };
  }
  const isErrorObject = (e: unknown) => {
    const o = e as { message?: unknown; type?: unknown; code?: unknown } | undefined;
    return typeof o?.message === "string" && typeof o.type === "string" && typeof o.code === "string";
  };
  if (res.status !== 200) {
    try {
      return isErrorObject((JSON.parse(text) as { error?: unknown }).error) ? { outcome: "failed_cleanly" } : { outcome: "broken", detail: text };
    } catch {
      return { outcome: "broken", detail: `${res.status} ${text.slice(0, 200)}` };
    }
  }
  if (!stream) {
    const body = JSON.parse(text) as { choices?: { finish_reason?: string }[] };
    const finish = body.choices?.[0]?.finish_reason;
    return finish === "stop" || finish === "length" ? { outcome: "completed" } : { outcome: "broken", detail: text.slice(0, 300) };
  }
  const events = text.split("\n\n").filter((b) => b.startsWith("data: ")).map((b) => b.slice(6));
  if (events.at(-1) !== "[DONE]") return { outcome: "broken", detail: `stream without [DONE]: ${text.slice(-300)}` };
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { error?: unknown; choices: { finish_reason: string | null }[] });
  const errorChunk = chunks.find((c) => c.error !== undefined);
  if (errorChunk) {
    return isErrorObject(errorChunk.error) && errorChunk.choices[0]?.finish_reason === "error"
      ? { outcome: "failed_cleanly" }
      : { outcome: "broken", detail: JSON.stringify(errorChunk) };
  }
  const finish = chunks.map((c) => c.choices[0]?.finish_reason).find((f) => f);
  return finish === "stop" || finish === "length" ? { outcome: "completed" } : { outcome: "broken", detail: text.slice(-300) };
}

describe("chaos", () => {
  it("every request completes or fails cleanly within its deadline while agents die, stall and misbehave; the ledger reconciles", async () => {
    const counts: Record<Outcome, number> = { completed: 0, failed_cleanly: 0, hung: 0, broken: 0 };
    const brokenDetails: string[] = [];
    let sent = 0;
    const until = Date.now() + LOAD_MS;
    const worker = async () => {
      while (Date.now() < until) {
        const n = sent++;
        const r = await oneRequest(n);
        counts[r.outcome]++;
        if (r.detail && r.outcome !== "completed") brokenDetails.push(`${r.outcome}: ${r.detail}`);
      }
    };
    const stop = (m: string) => running.get(m)?.child.kill("SIGSTOP");
    const resume = (m: string) => running.get(m)?.child.kill("SIGCONT");
    const chaos = async () => {
      const connectBroken = async (lines = false) => {
        broken.push(await startBrokenAgent({ gateway: gw.url, miner: minerNamed(gw.seed, BROKEN_MINER), chute: TINY_CHUTE.name, lines }));
      };
      await sleep(1_500);
      kill("miner-a");
      await sleep(1_500);
      await start("miner-a");
      stop("miner-b");
      await sleep(1_000);
      await connectBroken();
      await sleep(2_000);
      resume("miner-b");
      kill(LLAMA_MINER);
      await sleep(2_000);
      await start(LLAMA_MINER);
      stop("miner-c");
      await connectBroken(true);
      await sleep(2_500);
      resume("miner-c");
      kill("miner-a");
      await sleep(1_000);
      await start("miner-a");
    };
    await Promise.all([chaos(), ...Array.from({ length: WORKERS }, worker)]);

    const retried = await gw.db
      .prepare("SELECT count(*) AS n FROM invocations WHERE attempts > 1 AND outcome = 'ok'")
      .first<{ n: number }>();
    console.log(
      `broken agents: ${JSON.stringify(broken.map((b) => b.jobsReceived))}; chaos: sent=${sent} completed=${counts.completed} retried_invisibly=${retried?.n ?? 0} failed_cleanly=${counts.failed_cleanly} hung=${counts.hung} broken=${counts.broken}`,
    );
    expect(brokenDetails.filter((d) => d.startsWith("broken") || d.startsWith("hung"))).toEqual([]);
    expect(counts.hung).toBe(0);
    expect(counts.broken).toBe(0);
    expect(counts.completed + counts.failed_cleanly).toBe(sent);
    expect(counts.completed).toBeGreaterThan(sent / 2);
    // The broken agents got jobs (at most their capacity each, sent before the first malformed
    // frame arrived), and the gateway closed each that did as a protocol error.
    const closes = await Promise.all(broken.map(async (b) => ({ jobs: b.jobsReceived, code: await b.closed })));
    expect(closes.some((c) => c.jobs > 0)).toBe(true);
    for (const c of closes.filter((c) => c.jobs > 0)) expect(c).toMatchObject({ code: 1002 });
    expect(closes.every((c) => c.jobs <= 4)).toBe(true);

    // The ledger: every hold settled or released, and the money adds up.
    const ledger = await ledgerOf(gw, gw.seed.accountId);
    await expect.poll(async () => (await ledger.summary(gw.seed.accountId)).holds, { timeout: 15_000 }).toBe(0);
    const audit = await ledger.audit();
    expect(audit.ok).toBe(true);
    await expect
      .poll(async () => (await gw.db.prepare("SELECT count(*) AS n FROM invocations").first<{ n: number }>())!.n, { timeout: 10_000 })
      .toBeGreaterThanOrEqual(counts.completed);
    const charged = (await gw.db.prepare("SELECT coalesce(sum(cost_nano), 0) AS s FROM invocations").first<{ s: number }>())!.s;
    expect(CREDIT_USD * 1_000_000_000 - audit.balanceNano).toBe(charged);

    // The gateway and the agents keep serving.
    for (const m of [...UPSTREAM_MINERS, LLAMA_MINER]) resume(m);
    await waitForInstances(gw, TINY_CHUTE.id, 4, 20_000);
    for (let i = 0; i < 4; i++) expect((await oneRequest(3 * i)).outcome).toBe("completed");
  });
});
