import { performance } from "node:perf_hooks";
import type { JobSpec } from "../../protocol/index.ts";
import type { Engine, GenerateHooks, GenerateResult } from "../../miner-agent/engines/types.ts";
import type { Pacing } from "./contract.ts";

const WORDS = [" river", " stone", " light", " water", " field", " cloud", " north", " amber"];

/** A rough prompt size (4 characters a token): the gateway bounds what it bills by its own count. */
function promptTokens(spec: JobSpec): number {
  const chars = spec.kind === "chat" ? spec.messages.reduce((n, m) => n + m.content.length, 0) : spec.prompt.length;
  return Math.max(1, Math.ceil(chars / 4));
}

/**
 * A fake engine for the fleet simulator: exactly `maxTokens` one-word tokens per job, paced
 * in time (one per `tokenIntervalMs`), and handed to the agent's JobRunner in bursts every
 * `frameMs`, so that the runner coalesces each burst into one chunk frame as it does for a real
 * engine's bursts. The first token goes out at once (TTFT then measures the gateway alone).
 * No model, no sampling, no stop strings: it exists to load the gateway with many paced streams.
 */
export class SyntheticEngine implements Engine {
  // EngineKind is the closed union of the agent's real engines: this one stands in for an
  // OpenAI-compatible server, the chute's engine kind.
  readonly kind = "openai-upstream";

  constructor(
    readonly capacity: number,
    private readonly pacing: Pacing,
  ) {}

  generate(spec: JobSpec, hooks: GenerateHooks): Promise<GenerateResult> {
    const total = spec.params.maxTokens;
    const prompt = promptTokens(spec);
    const { tokenIntervalMs, frameMs } = this.pacing;
    return new Promise((resolve, reject) => {
      const { signal } = hooks;
      if (signal.aborted) return reject(signal.reason);
      const t0 = performance.now();
      let emitted = 0;
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const tick = (): void => {
        const due = Math.min(total, 1 + Math.floor((performance.now() - t0) / tokenIntervalMs));
        for (; emitted < due && !signal.aborted; emitted++) hooks.onDelta(WORDS[emitted % WORDS.length]!, 1);
        if (signal.aborted) return;
        if (emitted < total) {
          timer = setTimeout(tick, frameMs);
          return;
        }
        signal.removeEventListener("abort", onAbort);
        resolve({ finishReason: "length", promptTokens: prompt, completionTokens: total });
      };
      hooks.onPrompt?.(prompt);
      tick();
    });
  }

  async close(): Promise<void> {}
}
