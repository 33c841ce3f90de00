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
  displayName: null,
  description: "",
  huggingFaceId: null,
  quantization: "unknown",
  deprecationDate: null,
  gpuCount: 0,
  minVramMb: 0,
  gpuTypes: "[]",
  deletedAt: null,
  updatedAt: null,
  createdAt: 0,
};

const withTools = {
  model: "m",
  messages: [{ role: "user", content: "x" }],
  tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }],
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

describe("a refused body's 400", () => {
  const refusal = (body: Record<string, unknown>) => {
    const e = apiError(() => normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }], ...body }, chute));
    return { status: e.status, message: e.message, param: e.param };
  };

  it("says missing only for a field left out", () => {
    expect(refusal({ messages: undefined })).toEqual({ status: 400, message: "Missing required parameter 'messages'.", param: "messages" });
    expect(refusal({ messages: [{ content: "x" }] })).toMatchObject({ message: "Missing required parameter 'messages[0].role'.", param: "messages[0].role" });
  });

  it("names the expected and the given type of a field of the wrong type", () => {
    expect(refusal({ messages: "oops" })).toEqual({
      status: 400,
      message: "Invalid type for 'messages': expected an array, but got a string instead.",
      param: "messages",
    });
    expect(refusal({ temperature: "hot" }).message).toBe("Invalid type for 'temperature': expected a number, but got a string instead.");
    expect(refusal({ n: 1.5 }).message).toBe("Invalid type for 'n': expected an integer, but got a decimal number instead.");
    expect(refusal({ messages: null }).message).toBe("Invalid type for 'messages': expected an array, but got null instead.");
  });

  it("names the bound a value is outside of", () => {
    expect(refusal({ temperature: 7 })).toMatchObject({ param: "temperature", message: "Invalid value for 'temperature': expected a number at most 2, but got 7." });
    expect(refusal({ messages: [] }).message).toBe("Invalid value for 'messages': expected an array of at least 1 item, but got 0.");
  });

  it("lists the values a tag accepts, down the branch the body took", () => {
    expect(refusal({ messages: [{ role: "robot", content: "x" }] })).toMatchObject({
      param: "messages[0].role",
      message: "Invalid value for 'messages[0].role': 'robot'. Supported values are: 'system', 'developer', 'user', 'assistant' and 'tool'.",
    });
    expect(refusal({ messages: [{ role: "user", content: [{ type: "audio" }] }] })).toMatchObject({
      param: "messages[0].content[0].type",
      message: expect.stringMatching(/^Invalid value for 'messages\[0\]\.content\[0\]\.type': 'audio'\. Supported values are: 'text', 'image_url'/),
    });
    expect(refusal({ messages: [{ role: "system", content: [{ type: "image_url" }] }] }).message).toBe(
      "Invalid value for 'messages[0].content[0].type': 'image_url'. Supported values are: 'text'.",
    );
  });

  it("says what a union takes when no branch fits, and why a key is refused", () => {
    expect(refusal({ stop: 5 }).message).toBe("Invalid type for 'stop': expected a string or an array, but got a number instead.");
    expect(refusal({ logit_bias: { a: 1 } })).toMatchObject({ param: "logit_bias.a", message: "Invalid key for 'logit_bias.a': logit_bias keys are token ids." });
    expect(refusal({ tool_choice: "bogus" }).message).toBe("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or an object, but got 'bogus'.");
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: [1, 2] }, chute)).message).toMatch(/token-id prompts are not supported\)\.$/);
  });
});

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

  it("maps every sampling field, logprobs, response_format and tools", () => {
    const r = normalizeChat(
      {
        ...withTools,
        messages: [
          { role: "user", content: "weather?", name: "alice" },
          { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: "{}" } }] },
          { role: "tool", tool_call_id: "call_1", content: [{ type: "text", text: "sunny" }] },
          { role: "user", content: "thanks" },
        ],
        top_k: 5,
        min_p: 0.1,
        presence_penalty: 0.5,
        frequency_penalty: -0.5,
        repetition_penalty: 1.1,
        logit_bias: { "42": -100 },
        logprobs: true,
        top_logprobs: 3,
        tool_choice: { type: "function", function: { name: "get_weather" } },
        parallel_tool_calls: false,
        user: "someone",
        n: 1,
      },
      chute,
    );
    expect(r.spec).toEqual({
      kind: "chat",
      messages: [
        { role: "user", content: "weather?", name: "alice" },
        { role: "assistant", content: "", toolCalls: [{ id: "call_1", name: "get_weather", arguments: "{}" }] },
        { role: "tool", content: "sunny", toolCallId: "call_1" },
        { role: "user", content: "thanks" },
      ],
      params: {
        maxTokens: 512,
        topK: 5,
        minP: 0.1,
        presencePenalty: 0.5,
        frequencyPenalty: -0.5,
        repetitionPenalty: 1.1,
        logitBias: { "42": -100 },
        logprobs: { top: 3 },
      },
      tools: [{ name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } }],
      toolChoice: { name: "get_weather" },
      parallelToolCalls: false,
    });
    const schema = { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false };
    const f = normalizeChat(
      { model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "s", schema, strict: true } } },
      chute,
    );
    expect(f.spec).toMatchObject({ responseFormat: { type: "json_schema", name: "s", schema, strict: true } });
    const j = normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_object" } }, chute);
    expect(j.spec).toMatchObject({ responseFormat: { type: "json_object" } });
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
      [{ model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "xml" } }, "response_format.type"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], functions: [] }, "functions"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], top_logprobs: 2 }, "top_logprobs"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], top_logprobs: 21, logprobs: true }, "top_logprobs"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], logit_bias: { a: 1 } }, "logit_bias.a"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], presence_penalty: 3 }, "presence_penalty"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], tool_choice: "required" }, "tool_choice"],
      [{ model: "m", messages: [{ role: "user", content: "x" }], store: true }, "store"],
      [{ model: "m", messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x/y.png" } }] }] }, "messages[0].content[0]"],
      [{ model: "m", messages: [{ role: "tool", content: "42", tool_call_id: "call_1" }, { role: "user", content: "x" }] }, "messages[0].tool_call_id"],
      [{ ...withTools, tool_choice: { type: "function", function: { name: "nope" } } }, "tool_choice"],
      [{ ...withTools, tools: [...withTools.tools, ...withTools.tools] }, "tools[1].function.name"],
      [
        { ...withTools, tools: [{ type: "function", function: { name: "f", parameters: { type: "string", pattern: "^a" } } }] },
        "tools[0].function.parameters",
      ],
      [
        { model: "m", messages: [{ role: "user", content: "x" }], response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "object", properties: { n: { type: "integer", minimum: 3 } } } } } },
        "response_format.json_schema.schema",
      ],
      [{ ...withTools, logprobs: true }, "logprobs"],
      [{ ...withTools, tool_choice: "auto", response_format: { type: "json_object" } }, "response_format"],
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
    // Each choice takes a slot of one instance: this chute (concurrency 1) runs one at a time.
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: ["a", "b"] }, chute)).param).toBe("prompt");
    const wide: ChuteRecord = { ...chute, concurrency: 8 };
    expect(normalizeCompletion({ model: "m", prompt: ["a", "b"], n: 2, echo: true }, wide)).toMatchObject({
      spec: { kind: "completion", prompt: "a", prompts: ["a", "b"], n: 2 },
      echo: ["a", "b"],
    });
    expect(normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }], n: 3 }, wide).spec).toMatchObject({ n: 3 });
    expect(normalizeChat({ model: "m", messages: [{ role: "user", content: "x" }], n: 1 }, wide).spec).not.toHaveProperty("n");
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: ["a", "b", "c"], n: 3 }, wide)).param).toBe("n");
    const upstream: ChuteRecord = { ...chute, engine: "openai-upstream" };
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: "a", echo: true, logprobs: 2 }, upstream)).param).toBe("echo");
    expect(normalizeCompletion({ model: "m", prompt: "a", echo: true, logprobs: 2 }, chute).spec.params.logprobs).toEqual({ top: 2, prompt: true });
    expect(apiError(() => normalizeCompletion({ model: "m", prompt: "a", logprobs: 6 }, chute)).param).toBe("logprobs");
  });

  it("maps echo and integer logprobs", () => {
    const r = normalizeCompletion({ model: "m", prompt: "hi", echo: true, max_tokens: 3, top_k: 4 }, chute);
    expect(r).toMatchObject({ echo: ["hi"], spec: { params: { maxTokens: 3, topK: 4 } } });
    expect(normalizeCompletion({ model: "m", prompt: "hi", logprobs: 2 }, chute).spec.params.logprobs).toEqual({ top: 2 });
  });
});
