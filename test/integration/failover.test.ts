import { request, type IncomingMessage } from "node:http";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startAgent, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../support/upstream-double.ts";
import { makeSeed, minerNamed, TINY_CHUTE } from "../../scripts/lib/seed.ts";

/**
 * Agents die: before the first token the request moves to another agent invisibly; after it the
 * stream ends with an error event and nothing hangs. Agents here forward to an upstream test
 * double (standing in for vLLM) so a failure can be staged at an exact point.
 */
let gw: Gateway;
let client: OpenAI;
const upstreams: UpstreamDouble[] = [];
const agents: AgentProcess[] = [];

function upstreamAgent(minerId: string, upstream: UpstreamDouble, parallel: number): Promise<AgentProcess> {
  return startAgent({
    gateway: gw.url,
    miner: minerNamed(gw.seed, minerId),
    engine: { kind: "openai-upstream", baseURL: upstream.url, model: "upstream-model", parallel },
  }).then((a) => (agents.push(a), a));
}

async function double(opts: Parameters<typeof startUpstreamDouble>[0]): Promise<UpstreamDouble> {
  const u = await startUpstreamDouble(opts);
  upstreams.push(u);
  return u;
}

/** Every agent stopped; then one agent, on a new upstream double, is the chute's only instance. */
async function soleAgent(minerId: string, opts: Parameters<typeof startUpstreamDouble>[0], parallel: number): Promise<UpstreamDouble> {
  for (const a of agents) a.kill();
  await waitForInstances(gw, TINY_CHUTE.id, 0);
  const upstream = await double(opts);
  await upstreamAgent(minerId, upstream, parallel);
  await waitForInstances(gw, TINY_CHUTE.id, 1);
  return upstream;
}

/** A non-streaming request that must end in 408 `upstream_timeout`. */
async function expectTimeout(content: string): Promise<void> {
  const err = await client.chat.completions
    .create({ model: TINY_CHUTE.name, messages: [{ role: "user", content }], max_tokens: 5 })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(OpenAI.APIError);
  expect(err).toMatchObject({ status: 408, code: "upstream_timeout" });
}

beforeAll(async () => {
  gw = await startGateway({
    seed: makeSeed({ minerNames: ["miner-a", "miner-b", "miner-c", "miner-d", "miner-e", "miner-f"] }),
    vars: { STREAM_IDLE_TIMEOUT_MS: "1500", FIRST_TOKEN_TIMEOUT_MS: "3000" },
  });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterAll(async () => {
  for (const a of agents) a.kill();
  await Promise.all(upstreams.map((u) => u.close()));
  await gw?.close();
});

describe("agent failures", () => {
  it("an agent killed before the first token: the request is retried on a second agent", async () => {
    const stalled = await double({ stallBeforeFirstToken: true });
    const healthy = await double({});
    const a = await upstreamAgent("miner-a", stalled, 8); // more free slots: the router prefers it
    await upstreamAgent("miner-b", healthy, 1);
    await waitForInstances(gw, TINY_CHUTE.id, 2);

    stalled.events.once("request", () => a.kill("SIGKILL"));
    const stream = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 5,
      stream: true,
    });
    let text = "";
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(stalled.requests).toHaveLength(1);
    expect(healthy.requests).toHaveLength(1);
    expect(text.trim().split(/\s+/)).toHaveLength(5);
    expect(finish).toBe("length");
    await expect.poll(() => gw.db.prepare("SELECT attempts, outcome, miner_id FROM invocations WHERE outcome = 'ok'").first()).toMatchObject({
      attempts: 2,
      miner_id: minerNamed(gw.seed, "miner-b").id,
    });
    await waitForInstances(gw, TINY_CHUTE.id, 1);
  });

  it("an agent killed mid-stream: the stream ends with an error event, nothing hangs", async () => {
    const stalling = await double({ stallAfterTokens: 3 });
    const c = await upstreamAgent("miner-c", stalling, 8);
    await waitForInstances(gw, TINY_CHUTE.id, 2);

    const stream = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 50,
      stream: true,
    });
    let text = "";
    const started = Date.now();
    const err = await (async () => {
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        // The upstream stalls after 3 tokens; once all 3 arrived, the agent dies.
        if (text.trim().split(/\s+/).length === 3) c.kill("SIGKILL");
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(String((err as Error).message)).toMatch(/miner/i);
    expect(text.trim().split(/\s+/)).toHaveLength(3);
    expect(Date.now() - started).toBeLessThan(10_000);
    await expect
      .poll(() => gw.db.prepare("SELECT outcome, error_code, completion_tokens FROM invocations WHERE miner_id = ?").bind(minerNamed(gw.seed, "miner-c").id).first())
      .toMatchObject({ outcome: "error", error_code: "miner_disconnected", completion_tokens: 3 });
  });

  it("a miner that goes silent mid-stream: the stream ends with an error after the idle timeout and the engine is cancelled", async () => {
    const silent = await soleAgent("miner-d", { stallAfterTokens: 2 }, 2);
    const closed = new Promise((resolve) => silent.events.once("client-closed", resolve));
    const stream = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "hello" }],
      max_tokens: 50,
      stream: true,
    });
    const started = Date.now();
    let text = "";
    const err = await (async () => {
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("upstream_timeout");
    expect(text.trim().split(/\s+/)).toHaveLength(2);
    expect(Date.now() - started).toBeLessThan(8_000);
    await closed; // the agent aborted its upstream request
  });

  // The client's disconnect shows up in workerd either as a cancelled request (request.signal
  // aborts) or as a failed write of the response body (the relay's writes reject); either cancels.
  it("a client disconnect mid-stream cancels the job: the engine's upstream request is closed, the slot freed", async () => {
    const paced = await soleAgent("miner-e", { delayPerTokenMs: 5 }, 2); // 1000 tokens take 5 s

    const req = request(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
    });
    req.end(JSON.stringify({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 1000, stream: true }));
    const res = await new Promise<IncomingMessage>((resolve) => req.once("response", resolve));
    const first = await new Promise<string>((resolve) => res.once("data", (d: Buffer) => resolve(d.toString())));
    const id = /"id":"([^"]+)"/.exec(first)![1]!;
    const closed = new Promise<{ tokensSent: number }>((resolve) => paced.events.once("client-closed", resolve));
    const t0 = Date.now();
    req.destroy();
    const { tokensSent } = await closed;
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(tokensSent).toBeLessThan(1000);
    await expect
      .poll(() => gw.db.prepare("SELECT outcome FROM invocations WHERE id = ?").bind(id).first())
      .toMatchObject({ outcome: "cancelled" });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });

  it("no first token before the deadline: 408 (OpenRouter's timeout status), and the job is cancelled on the agent", async () => {
    const stalled = await soleAgent("miner-f", { stallBeforeFirstToken: true }, 2);
    const closed = new Promise((resolve) => stalled.events.once("client-closed", resolve));
    const started = Date.now();
    await expectTimeout("hi");
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_900);
    await closed; // the agent aborted its upstream request
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });

  it("a non-streaming job whose first token came after the deadline is a 408 too, though it ended within the answer's hold", async () => {
    // The deadline is 3 s; the first token comes at 3.5 s and the job ends right after it.
    await soleAgent("miner-a", { delayBeforeFirstTokenMs: 3_500 }, 2);
    const timeouts = async () => (await gw.db.prepare("SELECT count(*) AS n, coalesce(sum(cost_nano), 0) AS cost FROM invocations WHERE error_code = 'upstream_timeout'").first<{ n: number; cost: number }>())!;
    const before = await timeouts();
    await expectTimeout("late");
    // Recorded as a timeout, charged nothing.
    await expect.poll(timeouts).toEqual({ n: before.n + 1, cost: before.cost });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });
  it("a non-streaming job that outlasts the session's 1 s hold: the Worker follows it, and the answer is whole and billed", async () => {
    await soleAgent("miner-b", { delayPerTokenMs: 10 }, 2); // 150 tokens take 1.5 s
    const started = Date.now();
    const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "long" }], max_tokens: 150 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
    expect(res.choices[0]!.finish_reason).toBe("length");
    expect(res.choices[0]!.message.content!.trim().split(/\s+/)).toHaveLength(150);
    expect(res.usage?.completion_tokens).toBe(150);
    await expect
      .poll(() => gw.db.prepare("SELECT outcome, completion_tokens, cost_nano > 0 AS charged FROM invocations WHERE id = ?").bind(res.id).first())
      .toMatchObject({ outcome: "ok", completion_tokens: 150, charged: 1 });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });
});
