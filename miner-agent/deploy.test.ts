import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { pickGpus, type DeploySpec, type Gpu } from "../protocol/index.ts";
import { decideOffer } from "./deploy.ts";

const H100: Gpu = { index: 0, name: "NVIDIA H100 80GB HBM3", vramMb: 81_559 };
const A10: Gpu = { index: 1, name: "NVIDIA A10G", vramMb: 23_028 };
const A10b: Gpu = { index: 2, name: "NVIDIA A10G", vramMb: 23_028 };

const spec = (over: Partial<DeploySpec> = {}): DeploySpec => ({
  chute: "acme/model",
  modelRef: "model.gguf",
  engine: "llama-cpp",
  contextLength: 2048,
  concurrency: 8,
  gpu: { count: 0, minVramMb: 0, types: [] },
  ...over,
});

describe("choosing GPUs for an offer", () => {
  it("takes the smallest free GPUs that fit, honouring type and memory", () => {
    expect(pickGpus({ count: 1, minVramMb: 20_000, types: [] }, [H100, A10, A10b], new Set())).toEqual([1]);
    expect(pickGpus({ count: 2, minVramMb: 20_000, types: [] }, [H100, A10, A10b], new Set([1]))).toEqual([2, 0]);
    expect(pickGpus({ count: 1, minVramMb: 40_000, types: [] }, [H100, A10], new Set())).toEqual([0]);
    expect(pickGpus({ count: 1, minVramMb: 0, types: ["h100"] }, [A10, H100], new Set())).toEqual([0]);
    expect(pickGpus({ count: 1, minVramMb: 0, types: ["a100"] }, [A10, H100], new Set())).toBeNull();
    expect(pickGpus({ count: 3, minVramMb: 0, types: [] }, [A10, H100], new Set())).toBeNull();
    expect(pickGpus({ count: 0, minVramMb: 0, types: [] }, [], new Set())).toEqual([]);
  });
});

describe("deciding on an offer", () => {
  it("launches llama-cpp chutes from a model file under the model directory, and nothing outside it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sluice-models-"));
    await writeFile(join(dir, "model.gguf"), "x");
    const engines = { "llama-cpp": { modelDir: dir, parallel: 2, threads: 1 } };
    const ok = await decideOffer(spec(), engines, [], new Set());
    expect(ok).toEqual({ ok: true, gpus: [], engine: { kind: "llama-cpp", modelPath: join(dir, "model.gguf"), parallel: 2, contextSize: 2048, threads: 1, gpu: false } });
    expect(await decideOffer(spec({ modelRef: "sub/../../etc/passwd" }), engines, [], new Set())).toMatchObject({ ok: false, reason: /leaves the model directory/ });
    expect(await decideOffer(spec({ modelRef: "../etc/passwd" }), engines, [], new Set())).toMatchObject({ ok: false });
    expect(await decideOffer(spec({ modelRef: "/etc/passwd" }), engines, [], new Set())).toMatchObject({ ok: false });
    expect(await decideOffer(spec({ modelRef: "missing.gguf" }), engines, [], new Set())).toMatchObject({ ok: false, reason: /not in/ });
  });

  it("launches vLLM/SGLang chutes through the configured command, with the chosen GPUs", async () => {
    const engines = { vllm: { command: "vllm serve {model} --port {port}", healthPath: "/health", startupTimeoutMs: 1000, parallel: 64, env: {} } };
    const d = await decideOffer(spec({ engine: "vllm", modelRef: "Qwen/Qwen3-8B", gpu: { count: 1, minVramMb: 20_000, types: [] } }), engines, [H100, A10], new Set());
    expect(d).toEqual({
      ok: true,
      gpus: [1],
      engine: { kind: "command", command: "vllm serve {model} --port {port}", model: "Qwen/Qwen3-8B", healthPath: "/health", startupTimeoutMs: 1000, parallel: 8, env: {}, contextLength: 2048, gpus: [1] },
    });
  });

  it("declines what it cannot run, saying why", async () => {
    expect(await decideOffer(spec({ engine: "sglang" }), { vllm: { command: "x", healthPath: "/h", startupTimeoutMs: 1, parallel: 1, env: {} } }, [], new Set())).toMatchObject({ ok: false, reason: /does not launch sglang/ });
    expect(await decideOffer(spec({ engine: "openai-upstream" }), {}, [], new Set())).toMatchObject({ ok: false });
    // A model reference that would read as an option of the engine's command is never launched.
    const vllm = { vllm: { command: "vllm serve {model} --port {port}", healthPath: "/h", startupTimeoutMs: 1, parallel: 1, env: {} } };
    expect(await decideOffer(spec({ engine: "vllm", modelRef: "--trust-remote-code" }), vllm, [], new Set())).toMatchObject({ ok: false, reason: /not a plain model name/ });
    expect(await decideOffer(spec({ gpu: { count: 1, minVramMb: 0, types: [] } }), {}, [A10], new Set([1]))).toMatchObject({ ok: false, reason: /free GPU/ });
  });
});
