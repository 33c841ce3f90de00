import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
export const WORKER_BUNDLE = `${ROOT}/.build/worker/index.js`;
export const TINY_MODEL = `${ROOT}/models/tiny-sluice.gguf`;
export const AGENT_BIN = `${ROOT}/miner-agent/bin/sluice-miner.mjs`;
