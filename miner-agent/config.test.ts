import { describe, expect, it } from "vitest";
import { deployableEngines, parseConfig, stripJsonComments } from "./config.ts";

const PATH = "/srv/miner/conf/agent.jsonc";

describe("parseConfig", () => {
  it("accepts JSONC: line and block comments, never inside strings", () => {
    const text = `// header comment
    {
      /* block
         comment */
      "gateway": "https://gw.example.com/", // trailing comment
      "hotkeyFile": "keys//hot /*not a comment*/.json"
    }`;
    const c = parseConfig(text, PATH);
    expect(c.gateway).toBe("https://gw.example.com/");
    expect(c.hotkeyFile).toBe("/srv/miner/conf/keys/hot /*not a comment*/.json");
    expect(stripJsonComments(`{"a": "x\\"//y"} // z`)).toBe(`{"a": "x\\"//y"} `);
  });

  it("fills the defaults", () => {
    const c = parseConfig(`{ "gateway": "http://127.0.0.1:8787", "hotkeyFile": "hotkey.json" }`, PATH);
    expect(c).toEqual({
      gateway: "http://127.0.0.1:8787",
      hotkeyFile: "/srv/miner/conf/hotkey.json",
      gpus: "auto",
      drainTimeoutMs: 120_000,
      heartbeatMs: 10_000,
      statusFile: "/srv/miner/conf/sluice-miner.status.json",
      instances: [],
      deploy: undefined,
    });
    expect(deployableEngines(c)).toEqual([]);
  });

  it("resolves relative paths against the config's directory; absolute ones stay", () => {
    const c = parseConfig(JSON.stringify({
      gateway: "http://127.0.0.1:8787",
      hotkeyFile: "../keys/hotkey.json",
      statusFile: "/var/run/sluice/status.json",
      gpus: [{ index: 0, name: "NVIDIA L4", vramMb: 23034 }],
      chutes: [
        { chute: "sluice/tiny-chat", engine: { kind: "llama-cpp", modelPath: "./models/tiny.gguf" } },
        { chute: "acme/qwen", gpus: [0], engine: { kind: "openai-upstream", baseURL: "http://127.0.0.1:8000/v1", model: "Qwen/Qwen3-8B" } },
        { chute: "acme/llama", engine: { kind: "command", command: "vllm serve {model} --port {port}", model: "meta-llama/Llama-3.1-8B-Instruct" } },
      ],
      deploy: { engines: { "llama-cpp": { modelDir: "models" }, vllm: { command: "vllm serve {model} --port {port}" } } },
    }), "conf/agent.json");
    const cwd = process.cwd();
    expect(c.hotkeyFile).toBe(`${cwd}/keys/hotkey.json`);
    expect(c.statusFile).toBe("/var/run/sluice/status.json");
    expect(c.gpus).toEqual([{ index: 0, name: "NVIDIA L4", vramMb: 23034 }]);
    expect(c.instances[0]!.engine).toEqual({ kind: "llama-cpp", modelPath: `${cwd}/conf/models/tiny.gguf`, parallel: 4, contextSize: 2048 });
    expect(c.instances[1]).toMatchObject({ chute: "acme/qwen", gpus: [0], engine: { kind: "openai-upstream", parallel: 16 } });
    expect(c.instances[2]!.engine).toEqual({
      kind: "command", command: "vllm serve {model} --port {port}", model: "meta-llama/Llama-3.1-8B-Instruct",
      healthPath: "/health", startupTimeoutMs: 600_000, parallel: 16, env: {}, gpus: [],
    });
    expect(c.deploy?.maxInstances).toBe(4);
    expect(c.deploy?.engines["llama-cpp"]?.modelDir).toBe(`${cwd}/conf/models`);
    expect(deployableEngines(c).sort()).toEqual(["llama-cpp", "vllm"]);
  });

  it("says where JSON is broken", () => {
    expect(() => parseConfig(`{ "gateway": "http://x", }`, PATH)).toThrow(/^Config \/srv\/miner\/conf\/agent.jsonc is not valid JSON: /);
  });

  it("names each invalid field", () => {
    const text = JSON.stringify({
      gateway: "not a url",
      chutes: [{ chute: "a/b", engine: { kind: "vllm", model: "m" } }],
      heartbeatMs: 60_000,
    });
    let message = "";
    try {
      parseConfig(text, PATH);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^Invalid config \/srv\/miner\/conf\/agent.jsonc:\n/);
    expect(message).toContain("gateway");
    expect(message).toContain("hotkeyFile");
    expect(message).toContain("chutes[0].engine.kind");
    expect(message).toContain("heartbeatMs");
    expect(message).not.toContain("[object Object]");
  });

  it("refuses a deploy section that names no engine", () => {
    const text = JSON.stringify({ gateway: "http://x", hotkeyFile: "k", deploy: { engines: {} } });
    expect(() => parseConfig(text, PATH)).toThrow(/name at least one engine/);
  });
});
