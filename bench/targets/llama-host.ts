/**
 * Row 5's engine host: the agent's own llama.cpp engine in a process of its own (started by
 * bench/targets/llama.ts with the engine's config as its argument), called directly for each
 * request the bench sends over Node's IPC channel. Each answer's times are taken here, around
 * engine.generate, so they hold the engine alone.
 */
import { createLlamaCppEngine } from "../../miner-agent/engines/llama-cpp.ts";
import type { LlamaCppEngineConfig } from "../../miner-agent/engines/types.ts";
import type { ChatBody } from "../load/http-client.ts";
import { generateOnce } from "./llama.ts";

export interface HostRequest {
  id: number;
  body: ChatBody;
  timeoutMs: number;
}

const config = JSON.parse(process.argv[2]!) as LlamaCppEngineConfig;
const engine = await createLlamaCppEngine(config);
process.on("message", (m: HostRequest) => {
  void generateOnce(engine, m.body, m.timeoutMs).then((sample) => process.send!({ id: m.id, sample }));
});
// The bench went away or is done with us.
process.once("disconnect", () => void engine.close().finally(() => process.exit(0)));
process.send!({ ready: true });
