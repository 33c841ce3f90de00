import { once } from "node:events";
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import type { JobSpec } from "../../protocol/index.ts";
import { startUpstreamDouble } from "../../test/support/upstream-double.ts";
import type { UpstreamDouble } from "../../test/support/upstream-double.ts";
import { createOpenAIUpstreamEngine } from "./openai-upstream.ts";
import { SseParser } from "./sse-parser.ts";
import { EngineError } from "./types.ts";
import type { Engine, GenerateResult, OpenAIUpstreamEngineConfig } from "./types.ts";

let double: UpstreamDouble;

beforeAll(async () => {
  double = await startUpstreamDouble();
});
afterAll(async () => {
  await double.close();
});
beforeEach(() => {
  double.reset();
});

function engine(overrides: Partial<OpenAIUpstreamEngineConfig> = {}): Engine {
  return createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: double.url, model: "m1", parallel: 4, ...overrides });
}

interface Run {
  deltas: Array<[string, number]>;
  result: Promise<GenerateResult>;
  controller: AbortController;
}

function run(e: Engine, spec: JobSpec): Run {
  const deltas: Array<[string, number]> = [];
  const controller = new AbortController();
  const result = e.generate(spec, { onDelta: (text, tokens) => deltas.push([text, tokens]), signal: controller.signal });
  return { deltas, result, controller };
}

async function engineError(promise: Promise<unknown>): Promise<EngineError> {
  const err: unknown = await promise.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(EngineError);
  return err as EngineError;
}

const chat: JobSpec = {
  kind: "chat",
  messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Say hello to the world" }],
  params: { maxTokens: 5 },
};

describe("openai-upstream engine", () => {
  it("streams chat deltas and reports the upstream usage", async () => {
    const e = engine({ apiKey: "sk-test" });
    expect(e.kind).toBe("openai-upstream");
    expect(e.capacity).toBe(4);
    const r = run(e, chat);
    // 5 prompt words + 3 per message: the double's count, not the engine's estimate.
    expect(await r.result).toEqual({ finishReason: "length", promptTokens: 13, completionTokens: 5 });
    expect(r.deltas).toEqual([["tok0", 1], [" tok1", 1], [" tok2", 1], [" tok3", 1], [" tok4", 1]]);
    const [req] = double.requests;
    expect(req?.path).toBe("/v1/chat/completions");
    expect(req?.headers.authorization).toBe("Bearer sk-test");
    expect(req?.body).toEqual({
      model: "m1", messages: chat.kind === "chat" ? chat.messages : [], stream: true,
      stream_options: { include_usage: true }, max_tokens: 5,
    });
  });

  it("streams a completion and forwards the sampling params", async () => {
    double.set({ tokens: 3 });
    const r = run(engine(), { kind: "completion", prompt: "Once upon", params: { maxTokens: 10, temperature: 0.7, topP: 0.9, seed: 42 } });
    expect(await r.result).toEqual({ finishReason: "stop", promptTokens: 2, completionTokens: 3 });
    expect(r.deltas.map(([t]) => t).join("")).toBe("tok0 tok1 tok2");
    const [req] = double.requests;
    expect(req?.path).toBe("/v1/completions");
    expect(req?.headers.authorization).toBeUndefined();
    expect(req?.body).toEqual({
      model: "m1", prompt: "Once upon", stream: true, stream_options: { include_usage: true },
      max_tokens: 10, temperature: 0.7, top_p: 0.9, seed: 42,
    });
  });

  it("passes stop sequences through and reports finish reason stop", async () => {
    const r = run(engine(), { ...chat, params: { maxTokens: 10, stop: ["tok3", "never"] } });
    expect(await r.result).toMatchObject({ finishReason: "stop", completionTokens: 3 });
    expect(r.deltas.map(([t]) => t).join("")).toBe("tok0 tok1 tok2");
    expect(double.requests[0]?.body.stop).toEqual(["tok3", "never"]);
  });

  it("falls back to counted chunks and a prompt estimate without a usage chunk", async () => {
    double.set({ omitUsage: true });
    const r = run(engine(), { kind: "completion", prompt: "x".repeat(41), params: { maxTokens: 7 } });
    expect(await r.result).toEqual({ finishReason: "length", promptTokens: 11, completionTokens: 7 });
  });

  it("turns an upstream 500 into a retryable EngineError with the upstream message", async () => {
    double.set({ failWithStatus: 500, failMessage: "CUDA out of memory" });
    const r = run(engine(), chat);
    const err = await engineError(r.result);
    expect(err.retryable).toBe(true);
    expect(err.message).toContain("500");
    expect(err.message).toContain("CUDA out of memory");
    expect(r.deltas).toEqual([]);
  });

  it("times out an upstream that stalls after tokens with a non-retryable EngineError", async () => {
    double.set({ stallAfterTokens: 2 });
    const closed = once(double.events, "client-closed");
    const started = Date.now();
    const r = run(engine({ idleTimeoutMs: 200 }), { ...chat, params: { maxTokens: 50 } });
    const err = await engineError(r.result);
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/nothing for 200 ms/);
    expect(r.deltas).toHaveLength(2);
    const [event] = await closed;
    expect(event.tokensSent).toBe(2);
  });

  it("times out an upstream that never answers with a retryable EngineError", async () => {
    double.set({ stallBeforeFirstToken: true });
    const err = await engineError(run(engine({ idleTimeoutMs: 150 }), chat).result);
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/nothing for 150 ms/);
  });

  it.each(["shape", "json"] as const)("rejects a malformed chunk (%s) with an EngineError", async (malformed) => {
    double.set({ malformed });
    const r = run(engine(), chat);
    const err = await engineError(r.result);
    expect(err.message).toMatch(malformed === "json" ? /not JSON/ : /unexpected shape/);
    expect(r.deltas).toEqual([]);
  });

  it("aborts mid-stream: rejects with AbortError and the upstream sees the connection close", async () => {
    double.set({ delayPerTokenMs: 10 });
    const closed = once(double.events, "client-closed");
    const r = run(engine(), { ...chat, params: { maxTokens: 1000 } });
    while (r.deltas.length < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    const abortedAt = Date.now();
    r.controller.abort();
    await expect(r.result).rejects.toMatchObject({ name: "AbortError" });
    const [event] = await closed;
    expect(Date.now() - abortedAt).toBeLessThan(200);
    expect(event.tokensSent).toBeLessThan(10);
    await vi.waitFor(() => expect(double.activeRequests()).toBe(0));
  });

  it("rejects at once with AbortError when the signal is already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    const promise = engine().generate(chat, { onDelta: () => undefined, signal: controller.signal });
    await expect(promise).rejects.toMatchObject({ name: "AbortError" });
    expect(double.requests).toHaveLength(0);
  });

  it("turns connection refused into a retryable EngineError", async () => {
    const server = createServer().listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    const e = engine({ baseURL: `http://127.0.0.1:${port}/v1` });
    const err = await engineError(run(e, chat).result);
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  it("reuses keep-alive connections across sequential requests", async () => {
    const e = engine();
    const before = double.totalConnections();
    for (let i = 0; i < 5; i++) await run(e, chat).result;
    expect(double.totalConnections() - before).toBeLessThanOrEqual(1);
  });
});

describe("SseParser", () => {
  const stream = [
    ": keep-alive comment\r\n",
    "event: message\r\nid: 1\r\n",
    "data: {\"a\":1}\r\n\r\n",
    "data:first\ndata: second\n\n",
    "data: x\r\rdata: [DONE]\n\n",
  ].join("");
  const expected = ["{\"a\":1}", "first\nsecond", "x", "[DONE]"];

  it("parses a whole stream", () => {
    expect(new SseParser().push(stream)).toEqual(expected);
  });

  it.each([1, 2, 3, 7])("parses the same events when split into %i-character reads", (size) => {
    const parser = new SseParser();
    const events: string[] = [];
    for (let i = 0; i < stream.length; i += size) events.push(...parser.push(stream.slice(i, i + size)));
    events.push(...parser.end());
    expect(events).toEqual(expected);
  });

  it("dispatches a final event without its blank line at end of stream", () => {
    const parser = new SseParser();
    expect(parser.push("data: a\n\ndata: b")).toEqual(["a"]);
    expect(parser.end()).toEqual(["b"]);
  });
});

/** A one-route OpenAI-compatible server answering with a fixed body (SSE or JSON). */
async function fixedServer(answer: (req: IncomingMessage, body: unknown, res: ServerResponse) => void) {
  const server = createHttpServer((req, res) => {
    let text = "";
    req.on("data", (d: Buffer) => (text += d.toString()));
    req.on("end", () => answer(req, JSON.parse(text), res));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const sse = (events: object[]) => `${events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("")}data: [DONE]\n\n`;

describe("openai-upstream engine: tools, logprobs, response_format, embeddings", () => {
  it("forwards every job parameter under its OpenAI name", async () => {
    const seen: Record<string, unknown>[] = [];
    const server = await fixedServer((_req, body, res) => {
      seen.push(body as Record<string, unknown>);
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(sse([{ choices: [{ delta: { content: "ok" }, finish_reason: "stop" }] }]));
    });
    try {
      const e = createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: server.url, model: "m1", parallel: 1 });
      await e.generate(
        {
          kind: "chat",
          messages: [
            { role: "user", content: "weather?", name: "alice" },
            { role: "assistant", content: "", toolCalls: [{ id: "call_1", name: "get_weather", arguments: "{}" }] },
            { role: "tool", content: "sunny", toolCallId: "call_1" },
          ],
          params: { maxTokens: 3, topK: 5, minP: 0.1, presencePenalty: 0.5, frequencyPenalty: 0.25, repetitionPenalty: 1.1, logitBias: { "7": -100 }, logprobs: { top: 2 } },
          tools: [{ name: "get_weather", parameters: { type: "object" } }],
          toolChoice: { name: "get_weather" },
          parallelToolCalls: false,
          responseFormat: { type: "json_schema", name: "s", schema: { type: "object" }, strict: true },
        },
        { onDelta: () => undefined, signal: new AbortController().signal },
      );
    } finally {
      await server.close();
    }
    expect(seen[0]).toEqual({
      model: "m1", stream: true, stream_options: { include_usage: true }, max_tokens: 3,
      top_k: 5, min_p: 0.1, presence_penalty: 0.5, frequency_penalty: 0.25, repetition_penalty: 1.1, logit_bias: { "7": -100 },
      messages: [
        { role: "user", content: "weather?", name: "alice" },
        { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: "{}" } }] },
        { role: "tool", content: "sunny", tool_call_id: "call_1" },
      ],
      logprobs: true, top_logprobs: 2,
      tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      parallel_tool_calls: false,
      response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "object" }, strict: true } },
    });
  });

  it("relays tool_calls deltas and logprobs, and maps finish_reason tool_calls", async () => {
    const lp = (token: string) => ({ token, logprob: -0.5, bytes: [...Buffer.from(token)], top_logprobs: [{ token, logprob: -0.5, bytes: null }] });
    const server = await fixedServer((_req, _body, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(sse([
        { choices: [{ delta: { role: "assistant", content: "Hi" }, logprobs: { content: [lp("Hi")] }, finish_reason: null }] },
        { choices: [{ delta: { tool_calls: [{ index: 0, id: "call_9", type: "function", function: { name: "f", arguments: "" } }] }, finish_reason: null }] },
        { choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: "{\"a\":" } }] }, finish_reason: null }] },
        { choices: [{ delta: { tool_calls: [{ index: 0, function: { arguments: "1}" } }] }, finish_reason: "tool_calls" }] },
        { choices: [], usage: { prompt_tokens: 9, completion_tokens: 6, prompt_tokens_details: { cached_tokens: 4 } } },
      ]));
    });
    try {
      const e = createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: server.url, model: "m1", parallel: 1 });
      const deltas: unknown[] = [];
      const result = await e.generate(
        { kind: "chat", messages: [{ role: "user", content: "x" }], params: { maxTokens: 9, logprobs: { top: 1 } }, tools: [{ name: "f" }] },
        { onDelta: (text, tokens, logprobs) => deltas.push({ text, tokens, logprobs }), onToolCall: (d, tokens) => deltas.push({ ...d, tokens }), signal: new AbortController().signal },
      );
      expect(result).toEqual({ finishReason: "tool_calls", promptTokens: 9, completionTokens: 6, cachedPromptTokens: 4 });
      expect(deltas).toEqual([
        { text: "Hi", tokens: 1, logprobs: [{ token: "Hi", logprob: -0.5, bytes: [72, 105], top: [{ token: "Hi", logprob: -0.5, bytes: [72, 105] }] }] },
        { index: 0, id: "call_9", name: "f", arguments: "", tokens: 1 },
        { index: 0, arguments: "{\"a\":", tokens: 1 },
        { index: 0, arguments: "1}", tokens: 1 },
      ]);
    } finally {
      await server.close();
    }
  });

  it("takes a chunk's finish, and refuses what the schemas refuse, however plain the chunk looks", async () => {
    const answers = [
      [{ choices: [{ delta: { content: "a" }, finish_reason: null }] }, { choices: [{ delta: { content: "b" }, finish_reason: "length" }] }],
      [{ choices: [{ delta: { content: 5 }, finish_reason: null }] }],
      [{ choices: [{ text: "a", finish_reason: null }] }],
      [{ choices: [{ delta: "a", finish_reason: null }] }],
    ];
    let next = 0;
    const server = await fixedServer((_req, _body, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(sse(answers[next++]!));
    });
    try {
      const e = createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: server.url, model: "m1", parallel: 1 });
      const ok = run(e, chat);
      expect(await ok.result).toMatchObject({ finishReason: "length", completionTokens: 2 });
      expect(ok.deltas).toEqual([["a", 1], ["b", 1]]);
      for (let i = 1; i < answers.length; i++) {
        const bad = run(e, chat);
        expect((await engineError(bad.result)).message).toMatch(/unexpected shape/);
        expect(bad.deltas).toEqual([]);
      }
    } finally {
      await server.close();
    }
  });

  it("embeds through POST /embeddings, vectors in input order", async () => {
    const server = await fixedServer((req, body, res) => {
      expect(req.url).toBe("/v1/embeddings");
      expect(body).toEqual({ model: "m1", input: ["a", "b"], encoding_format: "float" });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ data: [{ index: 1, embedding: [0.5, 2] }, { index: 0, embedding: [1, -1] }], usage: { prompt_tokens: 4 } }));
    });
    try {
      const e = createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: server.url, model: "m1", parallel: 1 });
      const r = await e.embed!(["a", "b"], new AbortController().signal);
      expect(r.promptTokens).toBe(4);
      expect(r.vectors.map((v) => [...v])).toEqual([[1, -1], [0.5, 2]]);
    } finally {
      await server.close();
    }
  });
});
