import { minerNamed, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, type AgentProcess } from "./agent-process.ts";
import type { Gateway } from "./gateway.ts";
import { waitForInstances } from "./router.ts";
import { startUpstreamDouble, type UpstreamBehaviour, type UpstreamDouble } from "./upstream-double.ts";

/** Instance ids named after the miners, so "first by id" (the router's tie-break) is the first miner by name. */
export const instanceOf = (minerName: string) => `${minerName}:${TINY_CHUTE.name}`;

/**
 * Agents serving the tiny chute through upstream test doubles (standing in for vLLM), so speed
 * and failures can be set per instance. Agents heartbeat every 300 ms: a gateway with
 * MINER_STALE_AFTER_MS 1500 evicts one after 1.5 s of silence.
 */
export class UpstreamAgents {
  private readonly upstreams: UpstreamDouble[] = [];
  private agents: AgentProcess[] = [];

  constructor(private readonly gateway: () => Gateway) {}

  async start(minerName: string, behaviour: UpstreamBehaviour, parallel: number): Promise<{ upstream: UpstreamDouble; agent: AgentProcess }> {
    const gw = this.gateway();
    const upstream = await startUpstreamDouble(behaviour);
    this.upstreams.push(upstream);
    const agent = await startAgent({
      gateway: gw.url,
      miner: minerNamed(gw.seed, minerName),
      instanceId: instanceOf(minerName),
      heartbeatMs: 300,
      engine: { kind: "openai-upstream", baseURL: upstream.url, model: "m", parallel },
    });
    this.agents.push(agent);
    return { upstream, agent };
  }

  /** Kills every agent (a stopped one is resumed first) and waits until the router lists none. */
  async stopAgents(): Promise<void> {
    for (const a of this.agents) {
      a.child.kill("SIGCONT");
      a.kill();
    }
    this.agents = [];
    await waitForInstances(this.gateway(), TINY_CHUTE.id, 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.upstreams.map((u) => u.close()));
  }
}
