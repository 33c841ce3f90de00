import type { Engine, EngineConfig, EngineKind } from "./types.ts";

type Factory<K extends EngineKind> = (config: Extract<EngineConfig, { kind: K }>) => Promise<Engine>;

/** Engines by kind; each module is loaded only when a chute uses it. */
const factories: { [K in EngineKind]: Factory<K> } = {
  "llama-cpp": async (config) => (await import("./llama-cpp.ts")).createLlamaCppEngine(config),
  "openai-upstream": async (config) => (await import("./openai-upstream.ts")).createOpenAIUpstreamEngine(config),
  command: async (config) => (await import("./command.ts")).createCommandEngine(config),
};

export function createEngine(config: EngineConfig): Promise<Engine> {
  const factory = factories[config.kind] as Factory<typeof config.kind>;
  return factory(config);
}

export type { Engine, EngineConfig, EngineKind };
