import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnAgent, type AgentProcess } from "../support/agent-process.ts";
import type { Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { waitForInstances } from "../support/router.ts";
import { newMiner, TINY_CHUTE } from "../../scripts/lib/seed.ts";

/** The gateway goes away (a hot reload or deploy drops every agent socket): agents come back. */
let platform: Platform;
let gw: Gateway;
let agent: AgentProcess;
let client: OpenAI;

beforeAll(async () => {
  platform = await startPlatform();
  ({ gw, agent, client } = platform);
});
afterAll(() => platform?.close());

const ask = () => client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 4 });

describe("agent reconnection", () => {
  it("reconnects with backoff after the gateway restarts, and serves again", async () => {
    expect((await ask()).usage!.completion_tokens).toBe(4);
    await gw.reload();
    await agent.waitFor((l) => l.event === "gateway.closed");
    await agent.waitFor((l) => l.event === "gateway.reconnecting");
    const connections = () => agent.logs.filter((l) => l.event === "gateway.connected").length;
    await expect.poll(connections, { timeout: 20_000 }).toBe(2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    expect((await ask()).usage!.completion_tokens).toBe(4);
  });

  it("refuses an agent with an unregistered hotkey, without disturbing the connected one", async () => {
    const intruder = await spawnAgent({ gateway: gw.url, miner: newMiner("intruder") });
    try {
      const closed = await intruder.waitFor((l) => l.event === "gateway.closed");
      expect(closed.code).toBe(4001);
      expect(intruder.logs.some((l) => l.event === "gateway.connected")).toBe(false);
    } finally {
      intruder.kill();
    }
    expect((await ask()).usage!.completion_tokens).toBe(4);
  });

  it("a draining agent whose gateway goes away does not reconnect: it finishes draining and exits", async () => {
    agent.kill("SIGTERM");
    await agent.waitFor((l) => l.event === "agent.draining");
    await gw.reload(); // within the drain's 1 s grace for stragglers
    const drainedAt = agent.logs.findIndex((l) => l.event === "agent.draining");
    await agent.waitFor((l) => l.event === "gateway.closed" && agent.logs.indexOf(l) > drainedAt);
    expect(await agent.exited).toBe(0);
    const afterDrain = agent.logs.slice(drainedAt);
    expect(afterDrain.map((l) => l.event)).not.toContain("gateway.reconnecting");
    expect(afterDrain.map((l) => l.event)).toContain("agent.stopped");
  });
});
