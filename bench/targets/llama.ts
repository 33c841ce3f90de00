import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import type { Engine, LlamaCppEngineConfig } from "../../miner-agent/engines/types.ts";
import type { JobSpec } from "../../protocol/index.ts";
import { CHAT_PROMPT, type ChatBody } from "../load/http-client.ts";
import type { Sample } from "../load/runner.ts";
import { ManagedChild } from "./child.ts";
import type { LoadClient, RunningTarget } from "./types.ts";

/** The job the gateway would send the agent for `body` (what worker/inference/normalize.ts builds). */
export function jobFor(body: ChatBody): JobSpec {
  return {
    kind: "chat",
    messages: [{ role: "user", content: CHAT_PROMPT }],
    params: { maxTokens: body.max_tokens, temperature: body.temperature, seed: body.seed },
  };
}

/** One request on the engine, timed around engine.generate. */
export async function generateOnce(engine: Engine, body: ChatBody, timeoutMs: number): Promise<Sample> {
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

const HOST = fileURLToPath(new URL("./llama-host.ts", import.meta.url));

/**
 * Row 5's baseline: the agent's own llama.cpp engine (node-llama-cpp, the same config the agent
 * gets) in a fresh process of its own (llama-host.ts), called directly with the job the gateway
 * would send. Like the agent on row 6, it is a process started for the row, so the two engine
 * hosts can be given the same CPU; the bench process, which ran the rows before, is not one.
 */
export async function startLlamaInProcess(config: LlamaCppEngineConfig): Promise<RunningTarget> {
  const host = new ManagedChild("llama.cpp engine host", process.execPath, ["--import", "tsx", HOST, JSON.stringify(config)], { ipc: true });
  const gone: Sample = { ok: false, error: "the llama.cpp engine host exited", latencyMs: 0 };
  const pending = new Map<number, (s: Sample) => void>();
  const exited = host.exited.then(() => {
    for (const answer of pending.values()) answer(gone);
    pending.clear();
  });
  let next = 0;
  let ready: () => void = () => undefined;
  host.onMessage((message) => {
    const m = message as { ready?: true; id?: number; sample?: Sample };
    if (m.ready) return ready();
    if (m.id === undefined || !m.sample) return;
    pending.get(m.id)?.(m.sample);
    pending.delete(m.id);
  });
  await new Promise<void>((resolve, reject) => {
    ready = resolve;
    void exited.then(() => reject(new Error(`the llama.cpp engine host exited before it was ready; output: ${host.lastOutput(1500)}`)));
  });
  const generate = (body: ChatBody, timeoutMs: number): Promise<Sample> =>
    new Promise((resolve) => {
      const id = next++;
      pending.set(id, resolve);
      if (!host.send({ id, body, timeoutMs })) {
        pending.delete(id);
        resolve(gone);
      }
    });
  const client = (_connections: number, timeoutMs: number): LoadClient => ({
    complete: (body) => generate(body, timeoutMs),
    stream: (body) => generate(body, timeoutMs),
    close: () => {},
  });
  return {
    client,
    gatewayPids: () => [],
    agentPids: () => [host.pid],
    notes: () => [
      `engine in a process of its own (bench/targets/llama-host.ts), each request sent over Node's IPC channel and timed there around engine.generate: llama.cpp, ${config.parallel} parallel sequences, ${config.threads ?? 1} thread(s), context ${config.contextSize}`,
    ],
    // The host closes its engine and exits when the channel closes; one that does not is killed.
    close: async () => {
      host.disconnect();
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      host.kill("SIGKILL");
    },
  };
}
