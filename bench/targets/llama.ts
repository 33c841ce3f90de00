import { performance } from "node:perf_hooks";
import { createLlamaCppEngine } from "../../miner-agent/engines/llama-cpp.ts";
import type { Engine, LlamaCppEngineConfig } from "../../miner-agent/engines/types.ts";
import type { JobSpec } from "../../protocol/index.ts";
import { CHAT_PROMPT, type ChatBody } from "../load/http-client.ts";
import type { Sample } from "../load/runner.ts";
import type { LoadClient, RunningTarget } from "./types.ts";

/** The job the gateway would send the agent for `body` (what worker/inference/normalize.ts builds). */
export function jobFor(body: ChatBody): JobSpec {
  return {
    kind: "chat",
    messages: [{ role: "user", content: CHAT_PROMPT }],
    params: { maxTokens: body.max_tokens, temperature: body.temperature, seed: body.seed },
  };
}

async function run(engine: Engine, body: ChatBody, timeoutMs: number): Promise<Sample> {
  const start = performance.now();
  let firstAt: number | undefined;
  try {
    const result = await engine.generate(jobFor(body), {
      onDelta: () => void (firstAt ??= performance.now()),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const latencyMs = performance.now() - start;
    if (firstAt === undefined) return { ok: false, error: "no token generated", latencyMs };
    return { ok: true, latencyMs, ttftMs: body.stream ? firstAt - start : undefined, tokens: result.completionTokens };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err), latencyMs: performance.now() - start };
  }
}

/**
 * Row 5's baseline: the agent's own llama.cpp engine (node-llama-cpp, the same config the agent
 * gets) loaded in this process and called directly, with the job the gateway would send.
 */
export async function startLlamaInProcess(config: LlamaCppEngineConfig): Promise<RunningTarget> {
  const engine = await createLlamaCppEngine(config);
  const client = (_connections: number, timeoutMs: number): LoadClient => ({
    complete: (body) => run(engine, body, timeoutMs),
    stream: (body) => run(engine, body, timeoutMs),
    close: () => {},
  });
  return {
    client,
    gatewayPids: () => [],
    // The engine's host is this process (which also runs the load generator, a small share here).
    agentPids: () => [process.pid],
    notes: () => [`engine in the bench process: llama.cpp, ${config.parallel} parallel sequences, ${config.threads ?? 1} thread(s), context ${config.contextSize}`],
    close: () => engine.close(),
  };
}
