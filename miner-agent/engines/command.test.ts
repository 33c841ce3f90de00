import { once } from "node:events";
import { pidAlive as alive } from "../../test/support/processes.ts";
import { createServer, type AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from "vitest";
import type { JobSpec } from "../../protocol/index.ts";
import { vllmDoubleCommand } from "../../test/support/vllm-double.ts";
import { log } from "../log.ts";
import { commandArgv, createCommandEngine, redactArgv, type CommandEngine } from "./command.ts";
import { EngineError, type CommandEngineConfig } from "./types.ts";

type Logged = [event: string, fields: Record<string, unknown>];
let logged: Logged[];
let spies: MockInstance[];
const engines: CommandEngine[] = [];

beforeEach(() => {
  logged = [];
  // The engine's structured log, captured (and kept out of the test output).
  spies = (["info", "warn", "error"] as const).map((level) =>
    vi.spyOn(log, level).mockImplementation((event, fields = {}) => void logged.push([event, fields])),
  );
});
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
  spies.forEach((s) => s.mockRestore());
});

function config(overrides: Partial<CommandEngineConfig> = {}): CommandEngineConfig {
  return {
    kind: "command",
    command: vllmDoubleCommand(),
    model: "acme/tiny",
    healthPath: "/health",
    startupTimeoutMs: 20_000,
    parallel: 3,
    env: {},
    ...overrides,
  };
}

async function launch(overrides: Partial<CommandEngineConfig> = {}): Promise<CommandEngine> {
  const engine = await createCommandEngine(config(overrides), { stopGraceMs: 3_000, healthIntervalMs: 50 });
  engines.push(engine);
  return engine;
}

async function failure(promise: Promise<unknown>): Promise<Error> {
  const err: unknown = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}


const chat: JobSpec = { kind: "chat", messages: [{ role: "user", content: "Say hello" }], params: { maxTokens: 3 } };

describe("command templates", () => {
  it("splits on whitespace and fills placeholders inside arguments", () => {
    const argv = commandArgv("  vllm serve {model}\t--port={port} --max-model-len {context}\n--devices gpu:{gpus} --cfg {\"a\":1} ", {
      model: "Qwen/Qwen3-8B", port: 8123, context: 32768, gpus: [0, 2],
    });
    expect(argv).toEqual(["vllm", "serve", "Qwen/Qwen3-8B", "--port=8123", "--max-model-len", "32768", "--devices", "gpu:0,2", "--cfg", "{\"a\":1}"]);
  });

  it("refuses unknown placeholders and {context} without a context length", () => {
    expect(() => commandArgv("vllm serve {modle}", { model: "m", port: 1 })).toThrow(/unknown placeholder \{modle\}/);
    expect(() => commandArgv("vllm serve {model} --max-model-len {context}", { model: "m", port: 1 })).toThrow(/no context length/);
    expect(() => commandArgv("   ", { model: "m", port: 1 })).toThrow(/empty/);
  });

  it("redacts secret-looking flag values in the logged argv", () => {
    expect(redactArgv(["vllm", "serve", "m", "--api-key", "sk-1", "--hf-token=abc", "--port", "80"])).toEqual(
      ["vllm", "serve", "m", "--api-key", "[redacted]", "--hf-token=[redacted]", "--port", "80"],
    );
  });
});

describe("command engine", () => {
  it("launches the server from the template, waits for health and streams through it; close() stops it", async () => {
    const engine = await launch({ command: vllmDoubleCommand(["--max-model-len", "{context}"]), contextLength: 4096 });
    expect(engine.kind).toBe("command");
    expect(engine.capacity).toBe(3);
    expect(alive(engine.pid)).toBe(true);

    const deltas: string[] = [];
    const result = await engine.generate(chat, { onDelta: (text) => deltas.push(text), signal: new AbortController().signal });
    expect(deltas.join("")).toBe("tok0 tok1 tok2");
    expect(result).toMatchObject({ finishReason: "length", completionTokens: 3 });

    const events = logged.map(([e]) => e);
    expect(events).toContain("engine.healthy");
    const launching = logged.find(([e]) => e === "engine.launching")![1];
    expect(launching.argv).toEqual(expect.arrayContaining(["--port", String(engine.port), "--model", "acme/tiny", "--max-model-len", "4096"]));
    // The server's own output, one structured event per line.
    const output = logged.filter(([e]) => e === "engine.output").map(([, f]) => f);
    expect(output).toContainEqual(expect.objectContaining({ stream: "stdout", pid: engine.pid, line: expect.stringContaining("loading acme/tiny (max_model_len=4096)") }));
    expect(output).toContainEqual(expect.objectContaining({ stream: "stderr", line: expect.stringContaining("not vLLM") }));

    await engine.close();
    expect(alive(engine.pid)).toBe(false);
    expect(await engine.exited).toEqual({ code: 0, signal: null }); // it took the SIGTERM and shut down
    expect(logged.map(([e]) => e)).toContain("engine.stopped");
    expect(logged.map(([e]) => e)).not.toContain("engine.exited");
    await engine.close(); // idempotent
  });

  it("passes CUDA_VISIBLE_DEVICES and the configured env; a process that exits at once fails with its code and stderr", async () => {
    const exitAtOnce = `${process.execPath} -e console.error('devices='+process.env.CUDA_VISIBLE_DEVICES+',extra='+process.env.EXTRA);process.exit(3)`;
    const t0 = Date.now();
    const err = await failure(launch({ command: exitAtOnce, gpus: [1, 3], env: { EXTRA: "yes" } }));
    expect(err.message).toMatch(/exited \(exit code 3\) before GET http:\/\/127\.0\.0\.1:\d+\/health answered/);
    expect(err.message).toContain("devices=1,3,extra=yes");
    expect(Date.now() - t0).toBeLessThan(5_000); // failed fast, not at the startup timeout
  });

  it("a fixed port must be free", async () => {
    const taken = createServer().listen(0, "127.0.0.1");
    await once(taken, "listening");
    const { port } = taken.address() as AddressInfo;
    try {
      const err = await failure(launch({ port }));
      expect(err.message).toMatch(new RegExp(`^port ${port} on 127\\.0\\.0\\.1 is not free: .*EADDRINUSE`));
    } finally {
      taken.close();
    }
    expect(logged.map(([e]) => e)).not.toContain("engine.launching");
  });

  it("a binary that does not exist cannot start", async () => {
    const err = await failure(launch({ command: "/nonexistent/vllm serve {model} --port {port}" }));
    expect(err.message).toMatch(/could not start '\/nonexistent\/vllm'.*ENOENT/);
  });

  it("a server that never becomes healthy times out and is stopped", async () => {
    // A plain HTTP server (quick to start) that answers 404 to everything.
    const notFound = `${process.execPath} -e console.log('up');require('http').createServer((q,s)=>s.writeHead(404).end()).listen(process.argv[1]) {port}`;
    const err = await failure(launch({ command: notFound, startupTimeoutMs: 2_000 }));
    expect(err.message).toMatch(/was not healthy within 2000 ms \(GET http:\/\/127\.0\.0\.1:\d+\/health: HTTP 404\); last output:\n {2}up$/);
    const failed = logged.find(([e]) => e === "engine.launch_failed")![1];
    expect(alive(failed.pid as number)).toBe(false);
  });

  it("a server that dies while serving fails the request with a retryable EngineError, and later requests too", async () => {
    const engine = await launch({ command: vllmDoubleCommand(["--delay-per-token-ms", "100", "--tokens", "50"]) });
    const deltas: string[] = [];
    const running = engine.generate({ ...chat, params: { maxTokens: 50 } }, {
      onDelta: (text) => {
        deltas.push(text);
        if (deltas.length === 1) process.kill(-engine.pid, "SIGKILL");
      },
      signal: new AbortController().signal,
    });
    const midStream = await failure(running);
    expect(midStream).toBeInstanceOf(EngineError);
    expect(midStream.message).toMatch(/^the engine process exited \(killed by SIGKILL\)/);
    expect((midStream as EngineError).retryable).toBe(false); // a token was already delivered

    const after = await failure(engine.generate(chat, { onDelta: () => undefined, signal: new AbortController().signal }));
    expect(after).toBeInstanceOf(EngineError);
    expect((after as EngineError).retryable).toBe(true);
    expect(after.message).toBe("the engine process exited (killed by SIGKILL)");
    await engine.exited;
    expect(logged.find(([e]) => e === "engine.exited")?.[1]).toMatchObject({ pid: engine.pid, signal: "SIGKILL" });
  });
});
