import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi, type MockInstance } from "vitest";
import { verifyNonce } from "../protocol/index.ts";
import { main } from "./cli.ts";
import { parseConfig, stripJsonComments } from "./config.ts";
import { loadHotkey } from "./hotkey.ts";
import { configTemplate } from "./init.ts";
import { writeStatusFile, type AgentStatus } from "./status.ts";

let dir: string;
let out: MockInstance;
let err: MockInstance;
const stdout = (): string => out.mock.calls.map((c) => c.join(" ")).join("\n");
const stderr = (): string => err.mock.calls.map((c) => c.join(" ")).join("\n");

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-cli-"));
  out = vi.spyOn(console, "log").mockImplementation(() => undefined);
  err = vi.spyOn(console, "error").mockImplementation(() => undefined);
});
afterEach(async () => {
  out.mockRestore();
  err.mockRestore();
  await rm(dir, { recursive: true, force: true });
});

/** The template with one `// Example:` block uncommented (and trailing commas it leaves removed). */
function withExample(template: string, n: number): string {
  const lines = template.split("\n");
  const starts = lines.flatMap((l, i) => (/^\s*\/\/ Example:/.test(l) ? [i] : []));
  for (let i = starts[n]! + 1; i < lines.length && /^\s*\/\/ /.test(lines[i]!); i++) lines[i] = lines[i]!.replace("// ", "");
  return stripJsonComments(lines.join("\n")).replace(/,(\s*[\]}])/g, "$1");
}

describe("sluice-miner init", () => {
  it("creates a 0600 hotkey and a commented config that parses, and prints the address and next steps", async () => {
    expect(await main(["init", "--dir", join(dir, "m"), "--gateway", "https://gw.example.com"])).toBe(0);
    const hotkeyPath = join(dir, "m", "hotkey.json");
    const configPath = join(dir, "m", "sluice-miner.jsonc");
    expect((await stat(hotkeyPath)).mode & 0o777).toBe(0o600);
    const key = await loadHotkey(hotkeyPath);
    const text = await readFile(configPath, "utf8");
    expect(text).toMatch(/^\/\/ sluice-miner configuration/);
    const config = parseConfig(text, configPath);
    expect(config).toMatchObject({ gateway: "https://gw.example.com", hotkeyFile: hotkeyPath, gpus: "auto", instances: [], deploy: undefined });
    expect(config.statusFile).toBe(join(dir, "m", "sluice-miner.status.json"));
    expect(stdout()).toContain(`Created hotkey ${hotkeyPath} (mode 0600)`);
    expect(stdout()).toContain(`\n  ${key.address}\n`);
    expect(stdout()).toContain(`npm run admin -- miners add --hotkey ${key.address}`);
    expect(stdout()).toContain(`sluice-miner run --config ${configPath}`);
  });

  it("explains every engine kind, with examples that are valid once uncommented", () => {
    const template = configTemplate("http://127.0.0.1:8787", "hotkey.json");
    for (const needle of ['"kind": "llama-cpp"', '"kind": "openai-upstream"', '"kind": "command"', "vllm serve {model} --port {port}", '"deploy"', "drainTimeoutMs", "heartbeatMs", "statusFile"]) {
      expect(template).toContain(needle);
    }
    const examples = template.split("\n").filter((l) => /^\s*\/\/ Example:/.test(l)).length;
    expect(examples).toBe(6);
    const parsed = Array.from({ length: examples }, (_, n) => parseConfig(withExample(template, n), "/m/sluice-miner.jsonc"));
    expect(parsed[0]!.gpus).toHaveLength(2);
    expect(parsed[1]!.instances[0]!.engine).toMatchObject({ kind: "llama-cpp", modelPath: "/m/models/tiny-sluice.gguf", gpu: false });
    expect(parsed[2]!.instances[0]!).toMatchObject({ gpus: [0, 1], engine: { kind: "openai-upstream", baseURL: "http://127.0.0.1:8000/v1" } });
    expect(parsed[3]!.instances[0]!.engine).toMatchObject({ kind: "command", command: "vllm serve {model} --port {port}", env: { CUDA_VISIBLE_DEVICES: "2" } });
    expect(parsed[4]!.deploy).toMatchObject({ maxInstances: 2, engines: { vllm: { parallel: 64 }, sglang: { healthPath: "/health" }, "llama-cpp": { modelDir: "/m/models" } } });
    expect(parsed[5]!.statusFile).toBe("/m/sluice-miner.status.json");
  });

  it("keeps an existing hotkey and config; --force rewrites the config, never the hotkey", async () => {
    expect(await main(["init", "--dir", dir])).toBe(0);
    const hotkey = await readFile(join(dir, "hotkey.json"), "utf8");
    const configPath = join(dir, "sluice-miner.jsonc");
    await writeFile(configPath, `{ "gateway": "http://10.0.0.1:8787", "hotkeyFile": "hotkey.json" }`);

    expect(await main(["init", "--dir", dir, "--gateway", "http://other:1"])).toBe(0);
    expect(stdout()).toContain("Kept the existing hotkey");
    expect(stdout()).toContain("Kept the existing config");
    expect(await readFile(configPath, "utf8")).toContain("10.0.0.1");

    expect(await main(["init", "--dir", dir, "--gateway", "http://other:1", "--force"])).toBe(0);
    expect(parseConfig(await readFile(configPath, "utf8"), configPath).gateway).toBe("http://other:1");
    expect(await readFile(join(dir, "hotkey.json"), "utf8")).toBe(hotkey);
  });

  it("fails on an existing hotkey readable by others, without touching it", async () => {
    expect(await main(["init", "--dir", dir])).toBe(0);
    await chmod(join(dir, "hotkey.json"), 0o644);
    expect(await main(["init", "--dir", dir, "--force"])).toBe(1);
    expect(stderr()).toMatch(/readable by others/);
  });

  it("refuses a gateway that is not an http(s) URL", async () => {
    expect(await main(["init", "--dir", dir, "--gateway", "gw.example.com"])).toBe(2);
    expect(stderr()).toContain("--gateway must be an http(s) URL");
  });
});

describe("usage", () => {
  it("answers --help with 0 and mistakes with 2", async () => {
    expect(await main(["--help"])).toBe(0);
    expect(await main([])).toBe(2);
    for (const command of ["init", "run", "status"]) {
      out.mockClear();
      expect(await main([command, "--help"])).toBe(0);
      expect(stdout()).toContain(`Usage: sluice-miner ${command}`);
    }
    expect(await main(["serve"])).toBe(2);
    expect(stderr()).toContain("Unknown command 'serve'");
    expect(await main(["status", "--verbose"])).toBe(2);
    expect(stderr()).toContain("Unknown option '--verbose'");
    expect(await main(["status", "extra"])).toBe(2);
    expect(await main(["run"])).toBe(2);
    expect(stderr()).toContain("Missing --config <file>.");
  });

  it("fails with 1 when the config cannot be read", async () => {
    expect(await main(["status", "--config", join(dir, "missing.jsonc")])).toBe(1);
    expect(stderr()).toMatch(/ENOENT/);
  });
});

describe("sluice-miner status", () => {
  let gateway: Server;
  let gatewayURL: string;
  let answer: "earnings" | "refuse" = "earnings";
  const seen: { path: string; verified: boolean; nonce: string }[] = [];
  const today = new Date().toISOString().slice(0, 10);

  beforeAll(async () => {
    // The gateway's earnings route, checking the signed-nonce headers as the gateway does.
    gateway = createServer((req, res) => {
      const hotkey = String(req.headers["x-sluice-hotkey"]);
      const nonce = String(req.headers["x-sluice-nonce"]);
      const verified = /^\d{13}\.[0-9a-f]{16}$/.test(nonce) && verifyNonce(hotkey, nonce, "earnings", String(req.headers["x-sluice-signature"]));
      seen.push({ path: req.url ?? "", verified, nonce });
      res.setHeader("content-type", "application/json");
      if (!verified || answer === "refuse" || req.url !== `/v1/miners/${hotkey}/earnings`) {
        res.statusCode = 401;
        res.end(JSON.stringify({ error: { message: "This hotkey is not a registered miner.", type: "invalid_request_error", code: "invalid_api_key" } }));
        return;
      }
      const amount = (nano: number) => ({ invocations: 1, prompt_tokens: 1, completion_tokens: 1, charged_nano: nano * 2, earnings_nano: nano, earnings_usd: String(nano / 1e9) });
      res.end(JSON.stringify({
        object: "miner.earnings", miner_id: hotkey, ...amount(1_750_000_000),
        days: [{ day: "2020-01-01", ...amount(1_500_000_000) }, { day: today, ...amount(250_000_000) }],
      }));
    });
    gateway.listen(0, "127.0.0.1");
    await once(gateway, "listening");
    gatewayURL = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => gateway.close(() => resolve())));
  beforeEach(() => {
    answer = "earnings";
    seen.length = 0;
  });

  async function setup(status?: (address: string) => AgentStatus): Promise<{ config: string; address: string }> {
    expect(await main(["init", "--dir", dir, "--gateway", gatewayURL])).toBe(0);
    const address = (await loadHotkey(join(dir, "hotkey.json"))).address;
    if (status) await writeStatusFile(join(dir, "sluice-miner.status.json"), status(address));
    out.mockClear();
    return { config: join(dir, "sluice-miner.jsonc"), address };
  }

  const agentStatus = (address: string, overrides: Partial<AgentStatus> = {}): AgentStatus => ({
    pid: process.pid, hotkey: address, gateway: gatewayURL, connected: true, draining: false,
    startedAt: new Date(Date.now() - 3_723_000).toISOString(), updatedAt: new Date().toISOString(),
    gpus: [{ index: 0, name: "NVIDIA L4", vramMb: 23034 }],
    instances: [
      { instanceId: `${address}:sluice/tiny-chat`, chute: "sluice/tiny-chat", engine: "llama-cpp", managed: false, capacity: 4, inflight: 2, draining: false, gpus: [], requestsServed: 1234, tokensServed: 56789 },
      { instanceId: `${address}:offer-7`, chute: "acme/qwen3-8b", engine: "command", managed: true, capacity: 32, inflight: 0, draining: true, gpus: [0], requestsServed: 5, tokensServed: 600 },
    ],
    deploying: [{ offerId: "offer-9", chute: "acme/llama", since: new Date(Date.now() - 42_000).toISOString() }],
    inflight: 2, requestsServed: 1239, tokensServed: 57389,
    ...overrides,
  });

  it("shows a running agent: connection, instances, deploys, GPUs and signed-for earnings", async () => {
    const { config, address } = await setup((a) => agentStatus(a));
    expect(await main(["status", "--config", config])).toBe(0);
    const text = stdout();
    expect(text).toMatch(/^Agent {6}running \(pid \d+, up 1 h 2 min\)/);
    expect(text).toContain(`Gateway    ${gatewayURL} (connected)`);
    expect(text).toContain(`Hotkey     ${address}`);
    expect(text).toContain("GPUs       0: NVIDIA L4 (23,034 MiB)");
    expect(text).toContain("Jobs       2 in flight; served 1,239 requests, 57,389 tokens");
    expect(text).toContain(`Earnings   $1.75 total, $0.25 today (${today} UTC)`);
    expect(text).toMatch(/CHUTE\s+INSTANCE\s+ENGINE\s+MANAGED\s+GPUS\s+CAPACITY\s+IN-FLIGHT\s+REQUESTS\s+TOKENS\s+STATE/);
    expect(text).toMatch(/sluice\/tiny-chat\s+\S+:sluice\/tiny-chat\s+llama-cpp\s+no\s+-\s+4\s+2\s+1,234\s+56,789\s+serving/);
    expect(text).toMatch(/acme\/qwen3-8b\s+\S+:offer-7\s+command\s+yes\s+0\s+32\s+0\s+5\s+600\s+draining/);
    expect(text).toMatch(/Deploying \(1\)\n\s+OFFER\s+CHUTE\s+SINCE\n\s+offer-9\s+acme\/llama\s+\S+ \(42 s\)/);
    expect(seen).toEqual([{ path: `/v1/miners/${address}/earnings`, verified: true, nonce: expect.any(String) }]);
  });

  it("--json prints one machine-readable object", async () => {
    const { config, address } = await setup((a) => agentStatus(a));
    expect(await main(["status", "--config", config, "--json"])).toBe(0);
    const json = JSON.parse(stdout()) as Record<string, unknown>;
    expect(json).toMatchObject({
      running: true, state: "running", config, statusFile: join(dir, "sluice-miner.status.json"),
      status: { hotkey: address, connected: true, inflight: 2, instances: [{ chute: "sluice/tiny-chat" }, { chute: "acme/qwen3-8b", managed: true }] },
      earnings: { available: true, totalNano: 1_750_000_000, totalUsd: "1.75", todayNano: 250_000_000, todayUsd: "0.25", day: today },
    });
  });

  it("an agent whose process is gone is not running; its last known state is shown", async () => {
    const gone = spawnSync(process.execPath, ["-e", ""]).pid;
    const { config } = await setup((a) => agentStatus(a, { pid: gone, updatedAt: new Date(Date.now() - 300_000).toISOString() }));
    expect(await main(["status", "--config", config])).toBe(0);
    expect(stdout()).toMatch(new RegExp(`^Agent {6}not running: process ${gone} is gone; last update \\S+ \\(5 min 0 s ago\\)\\. Last known state:`));
    expect(stdout()).toContain("Instances (2)");
  });

  it("a process that stopped updating its status is not running either", async () => {
    const { config } = await setup((a) => agentStatus(a, { updatedAt: new Date(Date.now() - 30_000).toISOString() }));
    expect(await main(["status", "--config", config, "--json"])).toBe(0);
    expect(JSON.parse(stdout())).toMatchObject({ running: false, state: "stopped", reason: expect.stringContaining("has not updated its status for 30 s") });
  });

  it("without a status file, says the agent never ran; a refusing gateway leaves earnings unavailable", async () => {
    const { config } = await setup();
    answer = "refuse";
    expect(await main(["status", "--config", config])).toBe(0);
    expect(stdout()).toContain("Agent      not running: no status file: the agent has not run with this config");
    expect(stdout()).toContain("Earnings   unavailable: gateway answered HTTP 401: This hotkey is not a registered miner.");
  });

  it("an unreachable gateway or a broken status file never crash it", async () => {
    const { config } = await setup();
    const text = await readFile(config, "utf8");
    await writeFile(config, text.replace(gatewayURL, "http://127.0.0.1:1"));
    await writeFile(join(dir, "sluice-miner.status.json"), `{"pid": "nope"}`);
    expect(await main(["status", "--config", config, "--json"])).toBe(0);
    expect(JSON.parse(stdout())).toMatchObject({
      running: false, state: "unreadable", reason: expect.stringContaining("is not an agent status"),
      earnings: { available: false, reason: expect.stringMatching(/^gateway unreachable: /) },
    });
  });
});
