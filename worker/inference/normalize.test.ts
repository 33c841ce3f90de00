import { describe, expect, it } from "vitest";
import type { ChuteRecord } from "../catalog/types.ts";
import { ApiError } from "../errors.ts";
import { modelOf, normalizeChat, normalizeCompletion } from "./normalize.ts";

const chute: ChuteRecord = {
  id: "c1",
  name: "acme/model",
  ownerAccountId: "a",
  modelRef: "m",
  engine: "llama-cpp",
  contextLength: 2048,
  maxOutputTokens: 512,
  promptPriceNanoPerM: 1,
  completionPriceNanoPerM: 1,
  cachedPromptPriceNanoPerM: null,
  concurrency: 1,
  minInstances: 0,
  maxInstances: 1,
  public: true,
  createdAt: 0,
};

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

describe("normalizeChat", () => {
  it("maps OpenAI fields onto the job spec", () => {
    const r = normalizeChat(
      {
        model: "acme/model",
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] },
        ],
        max_completion_tokens: 9,
        max_tokens: 100,
        temperature: 0,
        top_p: 0.5,
        seed: 7,
        stop: "END",
        stream: true,
        stream_options: { include_usage: true },
      },
      chute,
    );
    expect(r).toEqual({
      endpoint: "chat",
      model: "acme/model",
      stream: true,
      includeUsage: true,
      spec: {
        kind: "chat",
        messages: [
          { role: "system", content: "be brief" },
          { role: "user", content: "ab" },
        ],
        params: { maxTokens: 9, temperature: 0, topP: 0.5, seed: 7, stop: ["END"] },
      },
    });
  });

  it("defaults max tokens to the chute's limit and refuses more", () => {
    const r = normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }] }, chute);
    expect(r.spec.params.maxTokens).toBe(512);
    const e = apiError(() => normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }], max_tokens: 513 }, chute));
    expect([e.status, e.param]).toEqual([400, "max_tokens"]);
  });

  it("names the offending parameter", () => {
    const cases: [unknown, string][] = [
      [{ model: "m" }, "messages"],
      [{ model: "m", messages: [] }, "messages"],
      [{ model: "m", messages: [{ role: "user" }] }, "messages[0].content"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], top_p: 0 }, "top_p"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], n: 2 }, "n"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], stop: ["a", "b", "c", "d", "e"] }, "stop"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_object" } }, "response_format"],
      [{ model: "m", messages: [{ role: "assistant", content: "x" }] }, "messages"],
    ];
    for (const [body, param] of cases) {
      const e = apiError(() => normalizeChat(body, chute));
      expect({ status: e.status, param: e.param }).toEqual({ status: 400, param });
    }
    expect(apiError(() => normalizeChat([], chute)).status).toBe(400);
    expect(apiError(() => modelOf({ messages: [] })).param).toBe("model");
  });
});

describe("normalizeCompletion", () => {
  it("takes a prompt string or a one-element array and defaults to 16 tokens", () => {
    const a = normalizeCompletion({ model: "m", prompt: "hi" }, chute);
    const b = normalizeCompletion({ model: "m", prompt: ["hi"] }, chute);
    expect(a.spec).toEqual({ kind: "completion", prompt: "hi", params: { maxTokens: 16 } });
    expect(b.spec).toEqual(a.spec);
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: ["a", "b"] }, chute)).param).toBe("prompt");
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: "a", echo: true }, chute)).param).toBe("echo");
  });
});
