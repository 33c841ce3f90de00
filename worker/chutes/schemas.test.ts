import { describe, expect, it } from "vitest";
import { ApiError } from "../errors.ts";
import { parseBody } from "../http/json.ts";
import { CreateChuteBody, PatchChuteBody } from "./schemas.ts";

const valid = {
  name: "acme/qwen3-8b",
  model_ref: "Qwen/Qwen3-8B",
  engine: "vllm",
  gpu: { count: 1, min_vram_mb: 40_000, types: ["a100", "h100"] },
  context_length: 32_768,
  pricing: { prompt: "0.0000001", completion: "0.0000004" },
};

function refusal(schema: typeof CreateChuteBody | typeof PatchChuteBody, body: unknown): { param: string | null; message: string } {
  try {
    parseBody(schema, body);
  } catch (err) {
    if (err instanceof ApiError) return { param: err.param, message: err.message };
    throw err;
  }
  throw new Error("accepted");
}

describe("CreateChuteBody", () => {
  it("takes a full body with defaults, prices in nano-USD per million tokens", () => {
    expect(parseBody(CreateChuteBody, valid)).toMatchObject({
      pricing: { prompt: 100_000_000, completion: 400_000_000 },
      concurrency: 1,
      min_instances: 0,
      max_instances: 1,
      public: true,
      gpu: { count: 1, min_vram_mb: 40_000, types: ["a100", "h100"] },
    });
  });

  it("names the offending field in param", () => {
    expect(refusal(CreateChuteBody, { ...valid, name: "Acme/Qwen" }).param).toBe("name");
    expect(refusal(CreateChuteBody, { ...valid, name: "no-slash" }).param).toBe("name");
    expect(refusal(CreateChuteBody, { ...valid, engine: "tgi" }).param).toBe("engine");
    expect(refusal(CreateChuteBody, { ...valid, pricing: { prompt: 0.1, completion: "0" } })).toEqual({
      param: "pricing.prompt",
      message: expect.stringMatching(/^Invalid type for 'pricing\.prompt': expected a USD-per-token decimal string/),
    });
    expect(refusal(CreateChuteBody, { ...valid, engine: "tgi" }).message).toBe(
      "Invalid value for 'engine': 'tgi'. Supported values are: 'llama-cpp', 'vllm', 'sglang' and 'openai-upstream'.",
    );
    expect(refusal(CreateChuteBody, { ...valid, gpu: { count: 1, vram: 1 } })).toEqual({
      param: "gpu.vram",
      message: "Unrecognized request argument supplied: gpu.vram.",
    });
    expect(refusal(CreateChuteBody, { ...valid, min_instances: 3, max_instances: 2 }).param).toBe("min_instances");
    expect(refusal(CreateChuteBody, { ...valid, max_instances: 0 }).param).toBe("max_instances");
    expect(refusal(CreateChuteBody, { ...valid, max_output_tokens: 40_000 }).param).toBe("max_output_tokens");
    expect(refusal(CreateChuteBody, { ...valid, gpu: { count: 0, min_vram_mb: 1 } }).param).toBe("gpu.min_vram_mb");
    expect(refusal(CreateChuteBody, { ...valid, model_ref: undefined }).message).toMatch(/^Missing required parameter 'model_ref'/);
    // Miners put it on their engine's command line: nothing that reads as an option, no shell words.
    for (const ref of ["--trust-remote-code", "-x", "a b", "../x.gguf", "x;rm", "$(id)"]) {
      expect(refusal(CreateChuteBody, { ...valid, model_ref: ref }).param).toBe("model_ref");
    }
    for (const ref of ["Qwen/Qwen3-8B", "tiny-sluice.gguf", "meta-llama/Llama-3.1-8B@main", "org/model:q4_k_m"]) {
      expect(CreateChuteBody.safeParse({ ...valid, model_ref: ref }).success).toBe(true);
    }
  });
});

describe("PatchChuteBody", () => {
  it("takes partial changes and refuses an empty one", () => {
    expect(parseBody(PatchChuteBody, { pricing: { input_cache_read: null }, max_instances: 3 })).toEqual({
      pricing: { input_cache_read: null },
      max_instances: 3,
    });
    expect(refusal(PatchChuteBody, {}).message).toMatch(/at least one field/);
  });
});
