import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { readSse } from "../support/sse.ts";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { costNano } from "../../worker/billing/pricing.ts";

/**
 * OpenAI conformance of the chat and completions APIs on the real path (official client ->
 * workerd gateway -> agent -> llama.cpp on the tiny model). The tiny model writes word salad,
 * so tests check what the API promises: fields honoured, shapes, grammars that force valid JSON.
 * Every generation is greedy (temperature 0) or seeded, and the requests run one at a time.
 */
let platform: Platform;
let gw: Gateway;
let client: OpenAI;
const model = TINY_CHUTE.name;
const messages = [{ role: "user" as const, content: "Tell me about the cat and the dog." }];

/** Token ids in the tiny model's vocabulary (scripts/make-tiny-model.mjs is deterministic). */
const TOKEN = { cat: 847, quote: 329, closeBrace: 128 } as const;

beforeAll(async () => {
  platform = await startPlatform();
  ({ gw, client } = platform);
});
afterAll(() => platform?.close());

type ChatParams = Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> & Record<string, unknown>;

async function chat(extra: ChatParams = {}) {
  return client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 16, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming);
}
const textOf = (r: OpenAI.ChatCompletion) => r.choices[0]!.message.content ?? "";

async function post(path: string, body: object) {
  return fetch(`${gw.baseURL}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function badRequest(body: object, path = "/chat/completions") {
  const res = await post(path, { model, ...body });
  const json = (await res.json()) as { error: { param: string | null; code: string; type: string; message: string } };
  return { status: res.status, error: json.error };
}

describe("chat request fields", () => {
  it("a completion, streamed or not, answers with its request id and the CORS headers a browser needs, each once", async () => {
    for (const stream of [false, true]) {
      const res = await post("/chat/completions", { model, messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream });
      expect(res.status).toBe(200);
      await res.text();
      expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      // A header set twice would read as "a, a".
      expect(res.headers.get("access-control-expose-headers")?.split(",")).toEqual([
        "x-request-id", "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
      ]);
      expect(res.headers.get("x-ratelimit-remaining-requests")).toMatch(/^\d+$/);
    }
  });

  it("top_k=1 and min_p=1 keep only the most likely token: the text equals greedy even at temperature 2", async () => {
    const greedy = textOf(await chat());
    expect(textOf(await chat({ temperature: 2, seed: 11, top_k: 1 }))).toBe(greedy);
    expect(textOf(await chat({ temperature: 2, seed: 11, min_p: 1 }))).toBe(greedy);
    // Without them, the same seed at temperature 2 samples something else.
    expect(textOf(await chat({ temperature: 2, seed: 11 }))).not.toBe(greedy);
    expect(textOf(await chat({ temperature: 2, seed: 11, top_p: 0.01 }))).toBe(greedy);
  });

  it("presence, frequency and repetition penalties change greedy output, reproducibly", async () => {
    const greedy = textOf(await chat({ max_tokens: 48 }));
    for (const extra of [{ presence_penalty: 2 }, { frequency_penalty: 2 }, { repetition_penalty: 1.8 }]) {
      const a = textOf(await chat({ max_tokens: 48, ...extra }));
      expect(a, JSON.stringify(extra)).not.toBe(greedy);
      expect(textOf(await chat({ max_tokens: 48, ...extra }))).toBe(a);
    }
  });

  it("logit_bias forces (+100) and bans (-100) tokens", async () => {
    const forced = textOf(await chat({ max_tokens: 5, logit_bias: { [TOKEN.cat]: 100 } }));
    expect(forced.trim().split(/\s+/)).toEqual(["cat", "cat", "cat", "cat", "cat"]);
    const banned = textOf(await chat({ max_tokens: 40, temperature: 1, seed: 3, logit_bias: { [TOKEN.cat]: -100 } }));
    expect(banned.split(/\s+/)).not.toContain("cat");
    const unknown = await badRequest({ messages, logit_bias: { "999999": 5 } });
    expect([unknown.status, unknown.error.code]).toEqual([400, "invalid_request"]);
  });

  it("n=1, user, seed, stop and stream_options are accepted", async () => {
    const r = await chat({ n: 1, user: "user-1234", seed: 5, stop: ["zzz"] });
    expect(r.choices).toHaveLength(1);
    // llama.cpp starts every job from a cleared sequence: it knows no prompt token was cached.
    expect(r.usage!.prompt_tokens_details).toEqual({ cached_tokens: 0 });
  });

  it("n>1 returns n choices; seeded, choice j is what seed+j gives alone; the prompt is counted once", async () => {
    const sampled = { temperature: 1, max_tokens: 12 };
    const one = await chat({ ...sampled, seed: 11 });
    const three = await chat({ ...sampled, seed: 11, n: 3 });
    expect(three.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    expect(three.choices[0]!.message.content).toBe(textOf(one));
    expect(three.choices[1]!.message.content).toBe(textOf(await chat({ ...sampled, seed: 12 })));
    expect(three.choices[2]!.message.content).toBe(textOf(await chat({ ...sampled, seed: 13 })));
    expect(new Set(three.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
    for (const c of three.choices) expect(c.finish_reason).toBe("length");
    expect(three.usage).toMatchObject({ prompt_tokens: one.usage!.prompt_tokens, completion_tokens: 36 });
    // Billed once, for exactly that: the hold covered all three answers, the charge is their tokens.
    const billed = () =>
      gw.db.prepare("SELECT prompt_tokens, completion_tokens, hold_nano, cost_nano FROM invocations WHERE id = ?").bind(three.id).first<{ prompt_tokens: number; completion_tokens: number; hold_nano: number; cost_nano: number }>();
    const price = { promptPriceNanoPerM: TINY_CHUTE.promptPriceNanoPerM, completionPriceNanoPerM: TINY_CHUTE.completionPriceNanoPerM, cachedPromptPriceNanoPerM: null };
    await expect.poll(billed).toMatchObject({ prompt_tokens: one.usage!.prompt_tokens, completion_tokens: 36, cost_nano: costNano(price, one.usage!.prompt_tokens, 36) });
    expect((await billed())!.hold_nano).toBeGreaterThanOrEqual(costNano(price, one.usage!.prompt_tokens, 3 * 12));
    // Each choice takes a slot of one instance: more than the chute's concurrency (4) is refused.
    const five = await badRequest({ messages, n: 5 });
    expect([five.status, five.error.param]).toEqual([400, "n"]);
    expect(five.error.message).toMatch(/at most 4 choices/);
  });

  it("n>1 streams every choice by index, each with its finish reason, then the summed usage", async () => {
    const sampled = { temperature: 1, max_tokens: 8, seed: 21 };
    const whole = await chat({ ...sampled, n: 2 });
    const stream = await client.chat.completions.create({ model, messages, ...sampled, n: 2, stream: true, stream_options: { include_usage: true } });
    const text = ["", ""];
    const finish: (string | null)[] = [null, null];
    const roles: number[] = [];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        if (c.delta.role) roles.push(c.index);
        text[c.index] += c.delta.content ?? "";
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(roles.sort()).toEqual([0, 1]);
    expect(text).toEqual(whole.choices.map((c) => c.message.content));
    expect(finish).toEqual(["length", "length"]);
    expect(usage).toMatchObject({ completion_tokens: 16, prompt_tokens: whole.usage!.prompt_tokens });
  });

  it("content-part arrays of text equal the string content; image parts are refused on a text-only chute", async () => {
    const parts = await chat({
      messages: [{ role: "user", content: [{ type: "text", text: "Tell me about the cat" }, { type: "text", text: " and the dog." }] }],
    });
    expect(textOf(parts)).toBe(textOf(await chat()));
    const image = await badRequest({
      messages: [{ role: "user", content: [{ type: "text", text: "What is this?" }, { type: "image_url", image_url: { url: "https://example.com/a.png" } }] }],
    });
    expect([image.status, image.error.param]).toEqual([400, "messages[0].content[1]"]);
    expect(image.error.message).toMatch(/text input only/);
  });

  it("fields no chute honours are refused by name", async () => {
    for (const [field, value] of [
      ["functions", [{ name: "f", parameters: {} }]],
      ["audio", { voice: "alloy", format: "mp3" }],
      ["prediction", { type: "content", content: "x" }],
      ["modalities", ["text", "audio"]],
    ] as const) {
      const r = await badRequest({ messages, [field]: value });
      expect(r.status, field).toBe(400);
      expect(r.error.param, field).toMatch(new RegExp(`^${field}`));
    }
  });
});

/** A schema every part of which the test checks by hand (no validator dependency). */
const PET_SCHEMA = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 24 },
    kind: { type: "string", enum: ["cat", "dog", "bird"] },
    age: { type: "integer" },
    vaccinated: { type: "boolean" },
    tags: { type: "array", items: { type: "string", maxLength: 10 }, maxItems: 3 },
    owner: { anyOf: [{ type: "null" }, { type: "object", properties: { city: { type: "string", maxLength: 12 } }, required: ["city"], additionalProperties: false }] },
  },
  required: ["name", "kind", "age", "vaccinated", "tags", "owner"],
  additionalProperties: false,
} as const;

function expectPet(value: unknown): void {
  expect(value).toBeTypeOf("object");
  const pet = value as Record<string, unknown>;
  expect(Object.keys(pet).sort()).toEqual(["age", "kind", "name", "owner", "tags", "vaccinated"]);
  expect(typeof pet.name === "string" && pet.name.length <= 24).toBe(true);
  expect(["cat", "dog", "bird"]).toContain(pet.kind);
  expect(Number.isInteger(pet.age)).toBe(true);
  expect(typeof pet.vaccinated).toBe("boolean");
  expect(Array.isArray(pet.tags) && pet.tags.length <= 3 && pet.tags.every((t) => typeof t === "string" && t.length <= 10)).toBe(true);
  if (pet.owner !== null) {
    const owner = pet.owner as Record<string, unknown>;
    expect(Object.keys(owner)).toEqual(["city"]);
    expect(typeof owner.city === "string" && owner.city.length <= 12).toBe(true);
  }
}

describe("response_format", () => {
  const jsonSchema = { type: "json_schema" as const, json_schema: { name: "pet", strict: true, schema: PET_SCHEMA } };

  it("json_schema (strict): the answer parses and validates against the schema", async () => {
    const r = await chat({ max_tokens: 200, response_format: jsonSchema });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expectPet(JSON.parse(textOf(r)));
    // Also with sampling: the grammar holds whatever is sampled.
    for (const seed of [1, 2, 3]) expectPet(JSON.parse(textOf(await chat({ max_tokens: 200, temperature: 1, seed, response_format: jsonSchema }))));
  });

  it("json_schema streamed: the concatenated deltas parse and validate; the client's parse helper accepts it", async () => {
    const stream = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 200, stream: true, response_format: jsonSchema });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expectPet(JSON.parse(text));
    const parsed = await client.chat.completions.parse({ model, messages, temperature: 0, max_tokens: 200, response_format: jsonSchema });
    expectPet(parsed.choices[0]!.message.parsed);
  });

  it("json_object: the answer is a JSON object", async () => {
    // The tiny model never ends a string by itself: bias the quote and the closing brace so it does.
    const r = await chat({ max_tokens: 60, response_format: { type: "json_object" }, logit_bias: { [TOKEN.quote]: 30, [TOKEN.closeBrace]: 30 } });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    const value: unknown = JSON.parse(textOf(r));
    expect(value).toBeTypeOf("object");
    expect(Array.isArray(value)).toBe(false);
  });

  it("schemas a grammar cannot enforce are refused with the schema's path", async () => {
    const r = await badRequest({
      messages,
      response_format: { type: "json_schema", json_schema: { name: "s", schema: { type: "object", properties: { email: { type: "string", format: "email" } } } } },
    });
    expect([r.status, r.error.param]).toEqual([400, "response_format.json_schema.schema"]);
    expect(r.error.message).toContain("email");
  });
});

const WEATHER_TOOL: OpenAI.ChatCompletionTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 16 }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city", "unit"],
      additionalProperties: false,
    },
    strict: true,
  },
};
const TIME_TOOL: OpenAI.ChatCompletionTool = {
  type: "function",
  function: { name: "get_time", parameters: { type: "object", properties: { zone: { type: "string", maxLength: 8 } }, required: ["zone"] } },
};
const weatherQuestion = [{ role: "user" as const, content: "What is the weather in Paris?" }];

function expectWeatherArguments(text: string): void {
  const args = JSON.parse(text) as Record<string, unknown>;
  expect(Object.keys(args).sort()).toEqual(["city", "unit"]);
  expect(typeof args.city === "string" && args.city.length <= 16).toBe(true);
  expect(["celsius", "fahrenheit"]).toContain(args.unit);
}

interface RawChunk {
  choices: { delta: { role?: string; content?: string | null; tool_calls?: Record<string, unknown>[] }; finish_reason: string | null }[];
}

describe("tool calls", () => {
  const named = { type: "function" as const, function: { name: "get_weather" } };

  it("streams tool_calls deltas as OpenAI does: id, type and name first with empty arguments, then argument fragments", async () => {
    const res = await post("/chat/completions", {
      model, messages: weatherQuestion, temperature: 0, max_tokens: 100, stream: true, tools: [WEATHER_TOOL, TIME_TOOL], tool_choice: named,
    });
    expect(res.status).toBe(200);
    const events = await readSse(res);
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as RawChunk);
    const calls = chunks.flatMap((c) => c.choices[0]?.delta.tool_calls ?? []);
    expect(calls.length).toBeGreaterThan(1);
    expect(calls[0]).toEqual({ index: 0, id: expect.stringMatching(/^call_/), type: "function", function: { name: "get_weather", arguments: "" } });
    for (const c of calls.slice(1)) {
      expect(Object.keys(c).sort()).toEqual(["function", "index"]);
      expect(c.index).toBe(0);
      expect(Object.keys(c.function as object)).toEqual(["arguments"]);
    }
    expectWeatherArguments(calls.map((c) => (c.function as { arguments: string }).arguments).join(""));
    expect(chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean)).toEqual(["tool_calls"]);
    expect(chunks.every((c) => !c.choices[0]?.delta.content)).toBe(true);
  });

  it("the official client's stream helper assembles the call", async () => {
    const stream = client.chat.completions.stream({
      model, messages: weatherQuestion, temperature: 0, max_tokens: 100, tools: [WEATHER_TOOL], tool_choice: "required",
    });
    const done: string[] = [];
    stream.on("tool_calls.function.arguments.done", (e) => done.push(e.arguments));
    const final = await stream.finalChatCompletion();
    const call = final.choices[0]!.message.tool_calls![0]!;
    expect(call.type).toBe("function");
    if (call.type !== "function") throw new Error("not a function call");
    expect(call.function.name).toBe("get_weather");
    expectWeatherArguments(call.function.arguments);
    expect(done).toEqual([call.function.arguments]);
    expect(final.choices[0]!.finish_reason).toBe("tool_calls");
  });

  it("non-streamed: message.tool_calls, content null, finish_reason tool_calls; required picks one of the tools", async () => {
    const r = await chat({ messages: weatherQuestion, max_tokens: 100, tools: [WEATHER_TOOL, TIME_TOOL], tool_choice: "required", parallel_tool_calls: false });
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    expect(choice.message.content).toBeNull();
    expect(choice.message.tool_calls).toHaveLength(1);
    const call = choice.message.tool_calls![0]!;
    if (call.type !== "function") throw new Error("not a function call");
    expect(call.id).toMatch(/^call_/);
    expect(["get_weather", "get_time"]).toContain(call.function.name);
    const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
    expect(Object.keys(args).sort()).toEqual(call.function.name === "get_weather" ? ["city", "unit"] : ["zone"]);
    expect(r.usage!.completion_tokens).toBeGreaterThan(3);
  });

  it("auto and none let the model answer in text; a conversation with tool results continues", async () => {
    const auto = await chat({ messages: weatherQuestion, tools: [WEATHER_TOOL], tool_choice: "auto" });
    expect(auto.choices[0]!.finish_reason).toBe("length");
    expect(textOf(auto).length).toBeGreaterThan(0);
    const none = await chat({ messages: weatherQuestion, tools: [WEATHER_TOOL], tool_choice: "none" });
    expect(none.choices[0]!.message.tool_calls ?? []).toEqual([]);
    const followUp = await chat({
      tools: [WEATHER_TOOL],
      messages: [
        ...weatherQuestion,
        { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' } }] },
        { role: "tool", tool_call_id: "call_1", content: "18 degrees and sunny" },
      ],
    });
    expect(textOf(followUp).length).toBeGreaterThan(0);
    expect(followUp.usage!.prompt_tokens).toBeGreaterThan(auto.usage!.prompt_tokens);
  });

  it("bad tool requests are refused with their param", async () => {
    const cases: [object, string][] = [
      [{ tools: [WEATHER_TOOL], tool_choice: { type: "function", function: { name: "nope" } } }, "tool_choice"],
      [{ tool_choice: "required" }, "tool_choice"],
      [{ tools: [{ type: "function", function: { name: "bad name!" } }] }, "tools[0].function.name"],
      [{ messages: [{ role: "tool", tool_call_id: "x", content: "1" }, ...weatherQuestion] }, "messages[0].tool_call_id"],
    ];
    for (const [body, param] of cases) {
      const r = await badRequest({ messages: weatherQuestion, ...body });
      expect([r.status, r.error.param]).toEqual([400, param]);
    }
  });
});

describe("logprobs", () => {
  it("chat: one entry per token with top_logprobs alternatives; the text is the greedy text", async () => {
    const plain = await chat({ max_tokens: 8 });
    const r = await chat({ max_tokens: 8, logprobs: true, top_logprobs: 3 });
    expect(textOf(r)).toBe(textOf(plain));
    const content = r.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(8);
    expect(content.map((t) => t.token).join("")).toBe(textOf(r));
    for (const t of content) {
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.bytes).toEqual([...Buffer.from(t.token)]);
      expect(t.top_logprobs).toHaveLength(3);
      // Greedy: the chosen token is the most likely one.
      expect(t.top_logprobs[0]!.token).toBe(t.token);
      expect(t.top_logprobs[0]!.logprob).toBeCloseTo(t.logprob, 6);
    }
    expect(plain.choices[0]!.logprobs).toBeNull();
  });

  it("chat streamed: each chunk carries the logprobs of its tokens", async () => {
    const stream = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 8, logprobs: true, top_logprobs: 1, stream: true });
    const tokens: string[] = [];
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      for (const t of chunk.choices[0]?.logprobs?.content ?? []) tokens.push(t.token);
    }
    expect(tokens).toHaveLength(8);
    expect(tokens.join("")).toBe(text);
  });

  it("legacy completions: integer logprobs as tokens, token_logprobs, top_logprobs and text_offset", async () => {
    const r = await client.completions.create({ model, prompt: "The cat", max_tokens: 6, temperature: 0, logprobs: 2 });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(6);
    expect(lp.tokens!.join("")).toBe(r.choices[0]!.text);
    expect(lp.token_logprobs!.every((l) => l <= 0)).toBe(true);
    expect(lp.top_logprobs!.every((m) => Object.keys(m).length === 2)).toBe(true);
    let offset = 0;
    lp.tokens!.forEach((t, i) => {
      expect(lp.text_offset![i]).toBe(offset);
      offset += t.length;
    });
  });
});

describe("legacy completions", () => {
  it("echo sends the prompt back before the completion, streamed and not", async () => {
    const plain = await client.completions.create({ model, prompt: "The cat", max_tokens: 6, temperature: 0 });
    const echoed = await client.completions.create({ model, prompt: "The cat", max_tokens: 6, temperature: 0, echo: true });
    expect(echoed.choices[0]!.text).toBe(`The cat${plain.choices[0]!.text}`);
    expect(echoed.usage).toEqual(plain.usage);
    const stream = await client.completions.create({ model, prompt: "The cat", max_tokens: 6, temperature: 0, echo: true, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(echoed.choices[0]!.text);
  });

  it("echo with logprobs: the prompt's tokens first (each given those before it and BOS), then the completion's", async () => {
    const plain = await client.completions.create({ model, prompt: "The cat sat", max_tokens: 4, temperature: 0, logprobs: 1 });
    const r = await client.completions.create({ model, prompt: "The cat sat", max_tokens: 4, temperature: 0, logprobs: 1, echo: true });
    const text = r.choices[0]!.text;
    expect(text).toBe(`The cat sat${plain.choices[0]!.text}`);
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens!.join("")).toBe(text);
    // The tiny model has a BOS token, so even the first prompt token has a logprob (a model
    // without one reports null there, as OpenAI does).
    const n = lp.tokens!.length;
    expect(n).toBeGreaterThan(4);
    expect(lp.token_logprobs!.every((l) => typeof l === "number" && l <= 0)).toBe(true);
    expect(lp.top_logprobs!.every((m) => Object.keys(m).length === 1)).toBe(true);
    // The completion's part is what logprobs without echo report.
    expect(lp.tokens!.slice(n - 4)).toEqual(plain.choices[0]!.logprobs!.tokens);
    expect(lp.token_logprobs!.slice(n - 4)).toEqual(plain.choices[0]!.logprobs!.token_logprobs);
    let offset = 0;
    lp.tokens!.forEach((t, i) => {
      expect(lp.text_offset![i]).toBe(offset);
      offset += t.length;
    });
    const stream = await client.completions.create({ model, prompt: "The cat sat", max_tokens: 4, temperature: 0, logprobs: 1, echo: true, stream: true });
    const streamed: (string | undefined)[] = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.tokens ?? []));
    expect(streamed).toEqual(lp.tokens);
  });

  it("a prompt array answers each prompt in order, n times each, echoed when asked; prompts are each counted", async () => {
    const alone = async (prompt: string) => (await client.completions.create({ model, prompt, max_tokens: 3, temperature: 0 })).choices[0]!.text;
    const r = await client.completions.create({ model, prompt: ["The cat", "The dog sat"], max_tokens: 3, temperature: 0 });
    expect(r.choices.map((c) => [c.index, c.text])).toEqual([
      [0, await alone("The cat")],
      [1, await alone("The dog sat")],
    ]);
    const cat = await client.completions.create({ model, prompt: "The cat", max_tokens: 3, temperature: 0 });
    const dog = await client.completions.create({ model, prompt: "The dog sat", max_tokens: 3, temperature: 0 });
    expect(r.usage).toMatchObject({ prompt_tokens: cat.usage!.prompt_tokens + dog.usage!.prompt_tokens, completion_tokens: 6 });
    // Two prompts x n=2, echoed: choice p*2+j answers prompt p and starts with it.
    const echoed = await client.completions.create({ model, prompt: ["The cat", "The dog sat"], n: 2, max_tokens: 3, temperature: 0, echo: true });
    expect(echoed.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(echoed.choices.map((c) => c.text)).toEqual([
      `The cat${cat.choices[0]!.text}`,
      `The cat${cat.choices[0]!.text}`,
      `The dog sat${dog.choices[0]!.text}`,
      `The dog sat${dog.choices[0]!.text}`,
    ]);
    // Streamed: each choice's chunks carry its index; the echo opens each.
    const stream = await client.completions.create({ model, prompt: ["The cat", "The dog sat"], max_tokens: 3, temperature: 0, echo: true, stream: true });
    const streamed = ["", ""];
    for await (const chunk of stream) for (const c of chunk.choices) streamed[c.index] += c.text;
    expect(streamed).toEqual([`The cat${cat.choices[0]!.text}`, `The dog sat${dog.choices[0]!.text}`]);
    const tooMany = await badRequest({ prompt: ["a", "b", "c"], n: 2 }, "/completions");
    expect([tooMany.status, tooMany.error.param]).toEqual([400, "n"]);
    const tokens = await badRequest({ prompt: [1, 2, 3] }, "/completions");
    expect([tokens.status, tokens.error.param]).toEqual([400, "prompt"]);
    expect(tokens.error.message).toMatch(/token-id prompts are not supported/);
  });
});

describe("embeddings", () => {
  const inputs = ["The cat sat on the mat.", "A dog ran through the garden."];
  interface EmbeddingsBody {
    object: string;
    model: string;
    data: { object: string; index: number; embedding: number[] | string }[];
    usage: { prompt_tokens: number; total_tokens: number };
  }
  const embed = async (body: object) => {
    const res = await post("/embeddings", { model, ...body });
    return { res, body: (await res.json()) as EmbeddingsBody };
  };

  it("float: one vector per input in order, deterministic, with prompt usage", async () => {
    const { res, body } = await embed({ input: inputs, encoding_format: "float" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(body.object).toBe("list");
    expect(body.model).toBe(model);
    expect(body.data.map((d) => [d.object, d.index])).toEqual([["embedding", 0], ["embedding", 1]]);
    const [a, b] = body.data.map((d) => d.embedding as number[]);
    expect(a).toHaveLength(64); // the tiny model's embedding size
    expect(b).toHaveLength(64);
    expect(a).not.toEqual(b);
    expect(body.usage.prompt_tokens).toBeGreaterThan(10);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens);
    const single = await embed({ input: inputs[0] });
    expect(single.body.data[0]!.embedding).toEqual(a);
  });

  it("base64: little-endian float32 of the same values; the official client decodes it", async () => {
    const floats = (await embed({ input: inputs })).body.data.map((d) => d.embedding as number[]);
    const { body } = await embed({ input: inputs, encoding_format: "base64" });
    body.data.forEach((d, i) => {
      const bytes = Buffer.from(d.embedding as string, "base64");
      const decoded = Array.from({ length: bytes.length / 4 }, (_, j) => bytes.readFloatLE(j * 4));
      expect(decoded).toEqual(floats[i]);
    });
    const viaClient = await client.embeddings.create({ model, input: inputs });
    expect(viaClient.data.map((d) => d.embedding)).toEqual(floats);
  });

  it("is billed like a prompt: the invocation charges its prompt tokens at the prompt price", async () => {
    const since = Date.now();
    const { body } = await embed({ input: ["Billing for embeddings counts the prompt only."] });
    interface Row { endpoint: string; outcome: string; prompt_tokens: number; completion_tokens: number; cost_nano: number; hold_nano: number }
    // Rows are written after their responses, in batches, so not in request order: this request's
    // row is the one written since it began with its prompt count (earlier tests sent other inputs).
    const latest = () =>
      gw.db.prepare("SELECT * FROM invocations WHERE endpoint = 'embedding' AND prompt_tokens = ? AND created_at >= ?").bind(body.usage.prompt_tokens, since).first<Row>();
    await expect.poll(latest).toMatchObject({ outcome: "ok", prompt_tokens: body.usage.prompt_tokens, completion_tokens: 0 });
    const last = (await latest())!;
    expect(last.cost_nano).toBe(Math.ceil((body.usage.prompt_tokens * TINY_CHUTE.promptPriceNanoPerM) / 1e6));
    expect(last.hold_nano).toBeGreaterThanOrEqual(last.cost_nano);
  });

  it("refuses token-id inputs, dimensions, empty inputs and unknown encodings with their param", async () => {
    const cases: [object, string][] = [
      [{ input: [1, 2, 3] }, "input"],
      [{ input: "x", dimensions: 8 }, "dimensions"],
      [{ input: "" }, "input"],
      [{ input: "x", encoding_format: "int8" }, "encoding_format"],
    ];
    for (const [body, param] of cases) {
      const r = await badRequest(body, "/embeddings");
      expect([r.status, r.error.param], JSON.stringify(body)).toEqual([400, param]);
    }
    // Longer than the context: the engine refuses it, and the gateway answers 400 (not retried).
    const long = await badRequest({ input: "cat ".repeat(TINY_CHUTE.contextLength + 10) }, "/embeddings");
    expect([long.status, long.error.code]).toEqual([400, "invalid_request"]);
    expect(long.error.message).toMatch(/does not fit/);
  });
});

describe("GET /v1/models for OpenRouter", () => {
  interface ListedModel {
    id: string;
    hugging_face_id: string | null;
    name: string;
    created: number;
    description: string;
    input_modalities: string[];
    output_modalities: string[];
    quantization: string;
    context_length: number;
    max_output_length: number;
    pricing: Record<string, string>;
    supported_sampling_parameters: string[];
    supported_features: string[];
    is_ready: boolean;
    deprecation_date: string | null;
  }
  const list = async () => {
    const res = await fetch(`${gw.baseURL}/models`, { headers: { authorization: `Bearer ${gw.seed.apiKey}` } });
    return (await res.json()) as { object: string; data: ListedModel[] };
  };

  it("lists each chute with OpenRouter's provider fields; prices are exact USD-per-token strings", async () => {
    const body = await list();
    expect(body.object).toBe("list");
    const m = body.data.find((d) => d.id === model)!;
    expect(Object.keys(m)).toEqual(
      expect.arrayContaining([
        "id", "hugging_face_id", "name", "created", "input_modalities", "output_modalities", "quantization", "context_length",
        "max_output_length", "pricing", "supported_sampling_parameters", "supported_features", "is_ready", "deprecation_date", "description",
      ]),
    );
    expect(m).toMatchObject({
      name: "Sluice Tiny Chat",
      hugging_face_id: null,
      input_modalities: ["text"],
      output_modalities: ["text"],
      quantization: "fp32",
      context_length: TINY_CHUTE.contextLength,
      max_output_length: TINY_CHUTE.maxOutputTokens,
      is_ready: true,
      deprecation_date: null,
    });
    expect(m.created).toBeGreaterThan(1_700_000_000);
    expect(m.created).toBeLessThan(Date.now() / 1000 + 1);
    // $0.10 and $0.40 per million tokens.
    expect(m.pricing).toEqual({ prompt: "0.0000001", completion: "0.0000004", request: "0", image: "0", input_cache_read: "0.0000001" });
    const one = (await (await fetch(`${gw.baseURL}/models/${model}`, { headers: { authorization: `Bearer ${gw.seed.apiKey}` } })).json()) as ListedModel;
    expect(one).toEqual(m);
  });

  /**
   * Each declared parameter and feature, called against the chute with a check that it acted.
   * A declaration without a check here fails the test: what the listing declares must be true.
   */
  it("every declared sampling parameter and feature works against the chute", async () => {
    const m = (await list()).data.find((d) => d.id === model)!;
    const greedy = textOf(await chat({ max_tokens: 24 }));
    const sampled = (extra: ChatParams) => chat({ max_tokens: 24, temperature: 2, seed: 11, ...extra }).then(textOf);
    const params: Record<string, () => Promise<void>> = {
      temperature: async () => expect(await sampled({})).not.toBe(greedy),
      top_p: async () => expect(await sampled({ top_p: 0.01 })).toBe(greedy),
      top_k: async () => expect(await sampled({ top_k: 1 })).toBe(greedy),
      min_p: async () => expect(await sampled({ min_p: 1 })).toBe(greedy),
      frequency_penalty: async () => expect(textOf(await chat({ max_tokens: 24, frequency_penalty: 2 }))).not.toBe(greedy),
      presence_penalty: async () => expect(textOf(await chat({ max_tokens: 24, presence_penalty: 2 }))).not.toBe(greedy),
      repetition_penalty: async () => expect(textOf(await chat({ max_tokens: 24, repetition_penalty: 1.8 }))).not.toBe(greedy),
      logit_bias: async () => expect(textOf(await chat({ max_tokens: 3, logit_bias: { [TOKEN.cat]: 100 } })).trim()).toBe("cat cat cat"),
      stop: async () => {
        const word = greedy.split(" ")[3]!;
        const r = await chat({ max_tokens: 24, stop: [` ${word}`] });
        expect(r.choices[0]!.finish_reason).toBe("stop");
        expect(textOf(r)).toBe(greedy.slice(0, greedy.indexOf(` ${word}`)));
      },
      seed: async () => expect(await sampled({ seed: 99 })).toBe(await sampled({ seed: 99 })),
      max_tokens: async () => expect((await chat({ max_tokens: 5 })).usage!.completion_tokens).toBe(5),
    };
    const features: Record<string, () => Promise<void>> = {
      tools: async () => {
        const r = await chat({ messages: weatherQuestion, max_tokens: 100, tools: [WEATHER_TOOL], tool_choice: "required" });
        const call = r.choices[0]!.message.tool_calls![0]!;
        if (call.type !== "function") throw new Error("not a function call");
        expectWeatherArguments(call.function.arguments);
      },
      json_mode: async () => {
        const r = await chat({ max_tokens: 60, response_format: { type: "json_object" }, logit_bias: { [TOKEN.quote]: 30, [TOKEN.closeBrace]: 30 } });
        expect(JSON.parse(textOf(r))).toBeTypeOf("object");
      },
      structured_outputs: async () => {
        const r = await chat({ max_tokens: 200, response_format: { type: "json_schema", json_schema: { name: "pet", strict: true, schema: PET_SCHEMA } } });
        expectPet(JSON.parse(textOf(r)));
      },
      logprobs: async () => {
        const r = await chat({ max_tokens: 4, logprobs: true, top_logprobs: 2 });
        expect(r.choices[0]!.logprobs!.content!.map((t) => t.top_logprobs.length)).toEqual([2, 2, 2, 2]);
      },
    };
    expect(m.supported_sampling_parameters.length).toBeGreaterThan(0);
    for (const p of m.supported_sampling_parameters) {
      expect(params[p], `no check for declared sampling parameter '${p}'`).toBeDefined();
      await params[p]!();
    }
    for (const f of m.supported_features) {
      expect(features[f], `no check for declared feature '${f}'`).toBeDefined();
      await features[f]!();
    }
  });
});
