import OpenAI from "openai";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, tinyEngine, type AgentProcess } from "./agent-process.ts";
import { startGateway, type Gateway, type GatewayOptions } from "./gateway.ts";
import { waitForInstances } from "./router.ts";

export interface Platform {
  gw: Gateway;
  agent: AgentProcess;
  /** The official client, pointed at the gateway with the seeded key, no client-side retries. */
  client: OpenAI;
  close(): Promise<void>;
}

/** A gateway with one real agent serving the tiny chute on llama.cpp, ready for requests. */
export async function startPlatform(
  opts: GatewayOptions & { parallel?: number; contextSize?: number } = {},
): Promise<Platform> {
  const gw = await startGateway(opts);
  const miner = gw.seed.miners[0]!;
  const agent = await startAgent({ gateway: gw.url, miner, engine: tinyEngine(opts.parallel ?? 4, opts.contextSize) });
  await waitForInstances(gw, TINY_CHUTE.id, 1);
  const client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
  return {
    gw,
    agent,
    client,
    close: async () => {
      agent.kill();
      await gw.close();
    },
  };
}
