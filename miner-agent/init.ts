import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createHotkeyFile, loadHotkey } from "./hotkey.ts";

/**
 * `sluice-miner init`: a hotkey (made once, never replaced) and a commented config beside it.
 */

export const HOTKEY_FILE = "hotkey.json";
export const CONFIG_FILE = "sluice-miner.jsonc";
export const DEFAULT_GATEWAY = "http://127.0.0.1:8787";

export interface InitResult {
  address: string;
  hotkeyPath: string;
  /** False when an existing hotkey was kept. */
  hotkeyCreated: boolean;
  configPath: string;
  config: "created" | "overwritten" | "kept";
}

const exists = (path: string): Promise<boolean> => access(path).then(() => true, () => false);

export async function initMiner(opts: { dir: string; gateway: string; force: boolean }): Promise<InitResult> {
  await mkdir(opts.dir, { recursive: true, mode: 0o700 });
  const hotkeyPath = join(opts.dir, HOTKEY_FILE);
  const configPath = join(opts.dir, CONFIG_FILE);
  // A hotkey is an identity the operator registered: never overwritten, even with --force.
  const hotkeyCreated = !(await exists(hotkeyPath));
  const key = hotkeyCreated ? await createHotkeyFile(hotkeyPath) : await loadHotkey(hotkeyPath);
  const hadConfig = await exists(configPath);
  if (!hadConfig || opts.force) await writeFile(configPath, configTemplate(opts.gateway, HOTKEY_FILE), { mode: 0o644 });
  return {
    address: key.address,
    hotkeyPath,
    hotkeyCreated,
    configPath,
    config: !hadConfig ? "created" : opts.force ? "overwritten" : "kept",
  };
}

/**
 * The commented config `init` writes. It parses as it is (no chutes, no deploy offers: the agent
 * connects and serves nothing until one is added). Each `// Example:` line is followed by a
 * commented block that is valid in place once uncommented (the tests check each).
 */
export function configTemplate(gateway: string, hotkeyFile: string): string {
  return `// sluice-miner configuration: JSON with comments. Written by \`sluice-miner init\`.
// Relative paths are relative to this file. Start the agent with
//   sluice-miner run --config <this file>
// and watch it with \`sluice-miner status --config <this file>\`.
{
  // The gateway the agent dials out to over WebSocket (no inbound port is needed on this host).
  "gateway": ${JSON.stringify(gateway)},

  // This miner's sr25519 hotkey: a Bittensor-style keyfile, mode 0600. Its SS58 address is the
  // miner's id on the gateway; the operator registers it (\`npm run admin -- miners add --hotkey <ss58>\`).
  // Keep it secret and back it up: a new hotkey is a new miner.
  "hotkeyFile": ${JSON.stringify(hotkeyFile)},

  // The host's GPUs, offered to the gateway's scaler. "auto" asks nvidia-smi (no GPUs when it is
  // absent); or declare them: index as CUDA numbers them, name, total memory in MiB.
  "gpus": "auto",
  // Example: two declared GPUs
  // "gpus": [
  //   { "index": 0, "name": "NVIDIA H100 80GB HBM3", "vramMb": 81559 },
  //   { "index": 1, "name": "NVIDIA H100 80GB HBM3", "vramMb": 81559 }
  // ],

  // Chutes this miner always serves, each with one engine. An entry has
  //   "chute":      the chute's name as clients call it (it must exist on the gateway);
  //   "instanceId": optional, a stable id for this instance (default "<hotkey>:<chute>");
  //   "gpus":       GPU indices the instance uses, so deploy offers do not count them free (default []);
  //   "engine":     one of the three kinds below.
  // "parallel" is, for every kind, the most requests the instance runs at once; the gateway never
  // sends more.
  "chutes": [
    // llama-cpp: the built-in llama.cpp on a GGUF file (CPU, or CUDA when the host has it).
    //   "contextSize": tokens per sequence; "threads": CPU threads (optional);
    //   "gpu": "auto" (default) or false to stay on the CPU.
    // Example: a small GGUF model on the CPU
    // { "chute": "sluice/tiny-chat",
    //   "engine": { "kind": "llama-cpp", "modelPath": "./models/tiny-sluice.gguf",
    //               "parallel": 4, "contextSize": 2048, "threads": 4, "gpu": false } },

    // openai-upstream: any OpenAI-compatible server you run yourself (vLLM, SGLang, llama-server).
    //   "baseURL": its /v1 URL; "model": the model name it serves; "apiKey": optional;
    //   "idleTimeoutMs": abort a request that produced nothing for this long (default 60000).
    // Example: a vLLM already serving on port 8000
    // { "chute": "acme/qwen3-8b", "gpus": [0, 1],
    //   "engine": { "kind": "openai-upstream", "baseURL": "http://127.0.0.1:8000/v1",
    //               "model": "Qwen/Qwen3-8B", "parallel": 32 } },

    // command: a server the agent launches itself, from a command line split on whitespace (no
    // shell). Placeholders: {model}, {port} (a free port unless "port" is set), {context}, {gpus}.
    // The agent polls GET "healthPath" until it answers 2xx (up to "startupTimeoutMs", default 10
    // minutes: downloads and loads take time) before announcing the instance; its output goes to
    // the agent's log; it is stopped (SIGTERM, then SIGKILL after 10 s) when the agent stops.
    //   "env": extra environment for the process.
    // Example: vLLM launched by the agent on GPU 2
    // { "chute": "acme/llama-3.1-8b", "gpus": [2],
    //   "engine": { "kind": "command", "command": "vllm serve {model} --port {port}",
    //               "model": "meta-llama/Llama-3.1-8B-Instruct", "parallel": 32,
    //               "healthPath": "/health", "startupTimeoutMs": 900000,
    //               "env": { "CUDA_VISIBLE_DEVICES": "2", "HF_HOME": "/data/hf" } } },
  ],

  // Deploy offers: the gateway's scaler asks agents with free matching GPUs to start instances of
  // chutes that need capacity. Leave "deploy" out to serve only the chutes above. Per chute engine:
  //   "llama-cpp":        GGUF files under "modelDir" (an offer names a file there);
  //   "vllm" / "sglang":  a command as for the command engine: {model} is the chute's model,
  //                       {context} its context length, {gpus} the GPUs picked for it (also set
  //                       as CUDA_VISIBLE_DEVICES).
  //   "maxInstances": at most this many offered instances at once (default 4).
  // Example: take vLLM and llama.cpp offers
  // "deploy": {
  //   "maxInstances": 2,
  //   "engines": {
  //     "vllm": { "command": "vllm serve {model} --port {port} --max-model-len {context}",
  //               "healthPath": "/health", "startupTimeoutMs": 900000, "parallel": 64 },
  //     "sglang": { "command": "python -m sglang.launch_server --model-path {model} --port {port}" },
  //     "llama-cpp": { "modelDir": "./models", "parallel": 4 }
  //   }
  // },

  // Where the running agent writes its state for \`sluice-miner status\` (default: beside this file).
  // Example: the default, spelled out
  // "statusFile": "sluice-miner.status.json",

  // SIGTERM or Ctrl-C drains: no new work, in-flight requests finish (up to this long), then exit.
  "drainTimeoutMs": 120000,

  // Heartbeat interval. The gateway drops an agent it has not heard from for a while (35 s by
  // default), so keep this well below that.
  "heartbeatMs": 10000
}
`;
}
