import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeSeed, minerNamed, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../support/upstream-double.ts";

/**
 * SIGTERM drains an agent: it stops taking work at once (its instances leave the router), the
 * requests it is serving finish normally, and then it exits 0. Nothing in flight is lost.
 */
let gw: Gateway;
let client: OpenAI;
const upstreams: UpstreamDouble[] = [];
const agents: AgentProcess[] = [];

async function upstreamAgent(name: string, delayPerTokenMs: number): Promise<AgentProcess> {
  const upstream = await startUpstreamDouble({ delayPerTokenMs });
  upstreams.push(upstream);
  const agent = await startAgent({
    gateway: gw.url,
    miner: minerNamed(gw.seed, name),
    engine: { kind: "openai-upstream", baseURL: upstream.url, model: "m", parallel: 4 },
  });
  agents.push(agent);
  return agent;
}

beforeAll(async () => {
  gw = await startGateway({ seed: makeSeed({ minerNames: ["miner-draining", "miner-staying"] }) });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterAll(async () => {
  for (const a of agents) a.kill();
  await Promise.all(upstreams.map((u) => u.close()));
  await gw?.close();
});

describe("SIGTERM drain", () => {
  it("finishes every in-flight stream, takes no new work, then exits 0", async () => {
    const draining = await upstreamAgent("miner-draining", 40);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    // Four 40-token streams (about 1.6 s each) on the draining agent.
    const streams = Array.from({ length: 4 }, async () => {
      const stream = await client.chat.completions.create({
        model: TINY_CHUTE.name,
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 40,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let finish: string | null = null;
      let usage: number | undefined;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
        usage = chunk.usage?.completion_tokens ?? usage;
      }
      return { text, finish, usage };
    });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight ?? 0).toBe(4);

    draining.kill("SIGTERM");
    await draining.waitFor((l) => l.event === "agent.draining");
    // Its instance leaves the router at once, while its streams are still running.
    await waitForInstances(gw, TINY_CHUTE.id, 0, 2_000);
    const staying = await upstreamAgent("miner-staying", 0);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const during = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
    expect(during.choices[0]!.message.content).toBe("tok0 tok1 tok2");

    const results = await Promise.all(streams);
    for (const r of results) {
      expect(r.finish).toBe("length");
      expect(r.usage).toBe(40);
      expect(r.text.split(" ")).toHaveLength(40);
    }
    expect(await draining.exited).toBe(0);
    // The new request went to the agent that stayed; the drained agent finished its four.
    const count = async () => (await gw.db.prepare("SELECT count(*) AS n FROM invocations").first<{ n: number }>())!.n;
    await expect.poll(count).toBe(5);
    const rows = await gw.db
      .prepare("SELECT miner_id, outcome, completion_tokens FROM invocations ORDER BY created_at")
      .all<{ miner_id: string; outcome: string; completion_tokens: number }>();
    const drainedId = minerNamed(gw.seed, "miner-draining").id;
    expect(rows.results.filter((r) => r.miner_id === drainedId).map((r) => [r.outcome, r.completion_tokens])).toEqual(
      Array.from({ length: 4 }, () => ["ok", 40]),
    );
    expect(rows.results.filter((r) => r.miner_id === minerNamed(gw.seed, "miner-staying").id)).toHaveLength(1);
    expect(staying.child.exitCode).toBeNull();
  });
});
