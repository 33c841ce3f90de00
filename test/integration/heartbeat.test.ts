import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandName, descendants } from "../../bench/proc.ts";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, tinyEngine, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { waitForInstances } from "../support/router.ts";

/**
 * Heartbeats both ways: a gateway that stops answering (its workerd process frozen) is
 * detected by the agent from the silence, and the agent reconnects once it answers again.
 */
let gw: Gateway;
let agent: AgentProcess;
let workerd: number[];

beforeAll(async () => {
  gw = await startGateway();
  workerd = descendants(process.pid).filter((pid) => commandName(pid) === "workerd");
  agent = await startAgent({ gateway: gw.url, miner: gw.seed.miners[0]!, engine: tinyEngine(2), heartbeatMs: 300 });
  await waitForInstances(gw, TINY_CHUTE.id, 1);
});
afterAll(async () => {
  for (const pid of workerd ?? []) process.kill(pid, "SIGCONT");
  agent?.kill();
  await gw?.close();
});

describe("gateway heartbeats", () => {
  it("an agent detects a gateway that stopped answering, and reconnects when it is back", async () => {
    expect(workerd.length).toBeGreaterThan(0);
    const connected = () => agent.logs.filter((l) => l.event === "gateway.connected").length;
    expect(connected()).toBe(1);
    for (const pid of workerd) process.kill(pid, "SIGSTOP");
    try {
      // Three heartbeats (900 ms) without a word from the gateway: the agent gives up on the socket.
      const gone = await agent.waitFor((l) => l.event === "gateway.unresponsive", 5_000);
      expect(gone.silentMs).toBeGreaterThanOrEqual(900);
      await agent.waitFor((l) => l.event === "gateway.reconnecting", 5_000);
    } finally {
      for (const pid of workerd) process.kill(pid, "SIGCONT");
    }
    await expect.poll(connected, { timeout: 20_000 }).toBe(2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
    expect(r.usage!.completion_tokens).toBe(3);
  });
});
