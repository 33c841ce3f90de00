import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatMessage, JobSpec, SamplingParams, TokenLogprob, ToolCallDelta } from "../../protocol/index.ts";
import { createLlamaCppEngine, DeltaStream } from "./llama-cpp.ts";
import { EngineError } from "./types.ts";
import type { Engine, GenerateResult } from "./types.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MODEL = `${ROOT}models/tiny-sluice.gguf`;
const PARALLEL = 4;

interface Collected extends GenerateResult {
  text: string;
  deltas: { text: string; tokens: number }[];
}

let engine: Engine;

beforeAll(async () => {
  execFileSync(process.execPath, [`${ROOT}scripts/make-tiny-model.mjs`, MODEL], { stdio: "ignore" });
  engine = await createLlamaCppEngine({ kind: "llama-cpp", modelPath: MODEL, parallel: PARALLEL, contextSize: 2048, threads: 1 });
});

afterAll(async () => {
  await engine?.close();
});

async function run(spec: JobSpec, signal = new AbortController().signal): Promise<Collected> {
  const deltas: { text: string; tokens: number }[] = [];
  const result = await engine.generate(spec, { onDelta: (text, tokens) => deltas.push({ text, tokens }), signal });
  return { ...result, deltas, text: deltas.map((d) => d.text).join("") };
}

const chat = (content: string, params: Partial<SamplingParams> = {}, history: ChatMessage[] = []): JobSpec => ({
  kind: "chat",
  messages: [...history, { role: "user", content }],
  params: { maxTokens: 32, temperature: 0, ...params },
});
const completion = (prompt: string, params: Partial<SamplingParams> = {}): JobSpec => ({
  kind: "completion",
  prompt,
  params: { maxTokens: 32, temperature: 0, ...params },
});

const WORDS = /^[a-z]+(?:[ ,.]+[a-z]+)*[,.]?$/;

describe("llama-cpp engine (tiny model)", () => {
  it("chat greedy is deterministic, made of words, and runs to max_tokens", async () => {
    const a = await run(chat("Tell me about cats."));
    const b = await run(chat("Tell me about cats."));
    expect(a.text).toBe(b.text);
    expect(a.text).toMatch(WORDS);
    expect(a).toMatchObject({ finishReason: "length", completionTokens: 32 });
    expect(a.promptTokens).toBe(b.promptTokens);
    expect(a.promptTokens).toBeGreaterThan(10);
  });

  it("output and prompt token count depend on the prompt and the whole history", async () => {
    const cats = await run(chat("Tell me about cats."));
    const dogs = await run(chat("Tell me about the river and the old stone road."));
    expect(dogs.text).not.toBe(cats.text);
    expect(dogs.promptTokens).toBeGreaterThan(cats.promptTokens);
    const history: ChatMessage[] = [
      { role: "system", content: "You are terse." },
      { role: "developer", content: "Answer in words." },
      { role: "user", content: "Hi." },
      { role: "assistant", content: "hello there" },
    ];
    const long = await run(chat("Tell me about cats.", {}, history));
    expect(long.promptTokens).toBeGreaterThan(cats.promptTokens + 10);
    expect(long.text).not.toBe(cats.text);
  });

  it("completion continues the raw prompt text, keeping the leading space", async () => {
    const a = await run(completion("Once upon a time"));
    expect(a.text).toMatch(/^ [a-z]/);
    expect(a.text.trimStart()).toMatch(WORDS);
    expect(a).toMatchObject({ finishReason: "length", completionTokens: 32 });
    // "Once upon a time" -> <s> + a handful of word pieces
    expect(a.promptTokens).toBeGreaterThan(4);
    expect((await run(completion("Once upon a time"))).text).toBe(a.text);
  });

  it("max_tokens ends with finish reason length and exactly max_tokens tokens", async () => {
    for (const spec of [chat("Count with me.", { maxTokens: 7 }), completion("The cat", { maxTokens: 7 })]) {
      const r = await run(spec);
      expect(r).toMatchObject({ finishReason: "length", completionTokens: 7 });
      expect(r.deltas).toHaveLength(7); // one word token per delta with this model
    }
  });

  it("deltas carry >= 1 token each and sum to completion_tokens; a shorter run is a prefix", async () => {
    const long = await run(chat("Tell me a story.", { maxTokens: 48 }));
    const short = await run(chat("Tell me a story.", { maxTokens: 12 }));
    for (const r of [long, short]) {
      expect(r.deltas.every((d) => d.tokens >= 1 && d.text !== "")).toBe(true);
      expect(r.deltas.reduce((n, d) => n + d.tokens, 0)).toBe(r.completionTokens);
    }
    expect(long.text.startsWith(short.text)).toBe(true);
    expect(long.text.length).toBeGreaterThan(short.text.length);
  });

  it("a stop string cuts the output before it (also mid-word and across tokens)", async () => {
    const specs = [completion("The old house by the river", { maxTokens: 40 }), chat("Where is the house?", { maxTokens: 40 })];
    for (const spec of specs) {
      const base = await run(spec);
      const words = base.text.trim().split(" ");
      const k = Math.floor(words.length / 2);
      const [w1, w2] = [words[k] ?? "", words[k + 1] ?? ""];
      for (const stop of [` ${w1} ${w2}`, `${w1.slice(1)} ${w2.slice(0, 2)}`]) {
        const cut = await run({ ...spec, params: { ...spec.params, stop: [stop, "qqqq"] } });
        expect(cut.text).toBe(base.text.slice(0, base.text.indexOf(stop)));
        expect(cut.text).not.toContain(stop);
        expect(cut.finishReason).toBe("stop");
        expect(cut.completionTokens).toBeLessThan(40);
        // Usage counts the stop string's tokens; deltas can only carry those that also hold output.
        const streamed = cut.deltas.reduce((n, d) => n + d.tokens, 0);
        expect(streamed).toBeLessThanOrEqual(cut.completionTokens);
        expect(streamed).toBeGreaterThanOrEqual(cut.completionTokens - 2);
      }
    }
  });

  it("text held back for a possible stop string is released at max_tokens", async () => {
    const base = await run(chat("Sing.", { maxTokens: 20 }));
    const last = base.text.split(" ").at(-1) ?? "";
    const r = await run(chat("Sing.", { maxTokens: 20, stop: [`${last}zzz`] }));
    expect(r.text).toBe(base.text);
    expect(r).toMatchObject({ finishReason: "length", completionTokens: 20 });
    expect(r.deltas.reduce((n, d) => n + d.tokens, 0)).toBe(20);
  });

  it("sampling with a seed is reproducible and the seed matters", async () => {
    const params = { temperature: 1, topP: 0.95, maxTokens: 24 };
    const a = await run(chat("Tell me about cats.", { ...params, seed: 42 }));
    const b = await run(chat("Tell me about cats.", { ...params, seed: 42 }));
    const c = await run(chat("Tell me about cats.", { ...params, seed: 43 }));
    const greedy = await run(chat("Tell me about cats.", { maxTokens: 24 }));
    expect(a.text).toBe(b.text);
    expect(c.text).not.toBe(a.text);
    expect(a.text).not.toBe(greedy.text);
    const d = await run(completion("Once", { ...params, seed: 7 }));
    expect((await run(completion("Once", { ...params, seed: 7 }))).text).toBe(d.text);
  });

  it("abort stops promptly, rejects with AbortError and frees the sequence", async () => {
    for (const spec of [chat("Talk forever.", { maxTokens: 1500 }), completion("Forever", { maxTokens: 1500 })]) {
      const controller = new AbortController();
      let deltas = 0;
      const started = performance.now();
      const job = engine.generate(spec, {
        onDelta: () => {
          if (++deltas === 5) controller.abort();
        },
        signal: controller.signal,
      });
      await expect(job).rejects.toMatchObject({ name: "AbortError" });
      expect(deltas).toBeLessThan(10);
      expect(performance.now() - started).toBeLessThan(1000);
    }
    await expect(run(chat("Hi."), AbortSignal.abort())).rejects.toMatchObject({ name: "AbortError" });
    // Every sequence is free again: `capacity` jobs at once still succeed.
    const results = await Promise.all(Array.from({ length: PARALLEL }, () => run(completion("The cat", { maxTokens: 5 }))));
    expect(results.every((r) => r.completionTokens === 5)).toBe(true);
  });

  it(`runs ${PARALLEL} generations concurrently, each with its own prompt and length`, async () => {
    const specs = [
      chat("Tell me about cats."),
      chat("What is the weather like?", { maxTokens: 24 }),
      completion("The moon over the quiet city"),
      chat("Sing a song.", { temperature: 0.8, seed: 5 }),
    ];
    const alone: Collected[] = [];
    for (const spec of specs) alone.push(await run(spec));
    const running = new Set<number>();
    let maxRunning = 0;
    const together = await Promise.all(specs.map(async (spec, i) => {
      const deltas: { text: string; tokens: number }[] = [];
      const result = await engine.generate(spec, {
        onDelta: (text, tokens) => {
          deltas.push({ text, tokens });
          running.add(i);
          maxRunning = Math.max(maxRunning, running.size);
        },
        signal: new AbortController().signal,
      });
      running.delete(i);
      return { ...result, deltas, text: deltas.map((d) => d.text).join("") };
    }));
    expect(maxRunning).toBe(PARALLEL);
    // Batched decoding is not bit-exact across batch compositions (near-tied logits of the tiny
    // random model can flip), so texts are not compared; each job keeps its own shape.
    expect(together.map((r) => r.completionTokens)).toEqual(alone.map((r) => r.completionTokens));
    expect(together.map((r) => r.promptTokens)).toEqual(alone.map((r) => r.promptTokens));
    for (const r of together) expect(r.deltas.reduce((n, d) => n + d.tokens, 0)).toBe(r.completionTokens);
  });

  it("refuses more than `capacity` concurrent jobs with a retryable EngineError", async () => {
    expect(engine.capacity).toBe(PARALLEL);
    const jobs = Array.from({ length: PARALLEL }, () => run(completion("The cat", { maxTokens: 40 })));
    const extra = run(completion("The cat", { maxTokens: 4 }));
    await expect(extra).rejects.toBeInstanceOf(EngineError);
    await expect(extra).rejects.toMatchObject({ retryable: true });
    await Promise.all(jobs);
  });

  it("a job arriving while others generate starts at once, also on the sequence a job just freed", async () => {
    const LONG = 400;
    const produced = [0, 0, 0];
    // Chats run through node-llama-cpp's LlamaChat, completions through our own loop: both pause.
    const long = produced.map((_, i) => engine.generate(i === 0 ? completion(`A lake number ${i}`, { maxTokens: LONG }) : chat(`Tell me about lake ${i}.`, { maxTokens: LONG }), {
      onDelta: (_text, tokens) => void (produced[i]! += tokens),
      signal: new AbortController().signal,
    }));
    while (produced.some((n) => n < 5)) await new Promise((resolve) => setTimeout(resolve, 1));
    const before = [...produced];
    // All four sequences in use: `first` takes the free one; `second` must wait for the
    // sequence `first` frees, which is cleared while the long jobs are generating.
    const first = await run(completion("The cat", { maxTokens: 4 }));
    const second = await run(chat("The dog?", { maxTokens: 4 }));
    const advanced = produced.map((n, i) => n - before[i]!);
    expect([first.completionTokens, second.completionTokens]).toEqual([4, 4]);
    // Each long job advanced a few tokens per short job's steps, not until the others paused.
    expect(Math.max(...advanced)).toBeLessThan(40);
    const results = await Promise.all(long);
    expect(results.map((r) => r.completionTokens)).toEqual([LONG, LONG, LONG]);
  });

  it("a prompt that does not fit the context is a retryable EngineError", async () => {
    const huge = "the cat sat on the mat ".repeat(600);
    await expect(run(completion(huge))).rejects.toMatchObject({ name: "EngineError", retryable: true });
  });
});

describe("llama-cpp engine: grammars, tools, logprobs, embeddings", () => {
  const collect = async (spec: JobSpec) => {
    const text: string[] = [];
    const calls: ToolCallDelta[] = [];
    let deltaTokens = 0;
    const logprobs: TokenLogprob[] = [];
    const result = await engine.generate(spec, {
      signal: new AbortController().signal,
      onDelta: (t, n, lp) => {
        text.push(t);
        deltaTokens += n;
        if (lp) logprobs.push(...lp);
      },
      onToolCall: (d, n) => {
        calls.push(d);
        deltaTokens += n;
      },
    });
    return { result, text: text.join(""), calls, deltaTokens, logprobs };
  };
  const user = [{ role: "user" as const, content: "Weather in Paris?" }];
  const tools = [
    { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string", maxLength: 8 } }, required: ["city"] } },
    { name: "get_time" },
  ];

  it("a required tool call: the name under an enum grammar, then arguments under the schema; every token counted", async () => {
    const r = await collect({ kind: "chat", messages: user, params: { maxTokens: 60, temperature: 0 }, tools, toolChoice: "required" });
    expect(r.result.finishReason).toBe("tool_calls");
    expect(r.text).toBe("");
    expect(r.calls[0]).toMatchObject({ index: 0, id: expect.stringMatching(/^call_/), arguments: "" });
    const name = r.calls[0]!.name!;
    const args = JSON.parse(r.calls.slice(1).map((c) => c.arguments).join("")) as Record<string, unknown>;
    expect(Object.keys(args)).toEqual(name === "get_weather" ? ["city"] : []);
    expect(r.deltaTokens).toBe(r.result.completionTokens);
  });

  it("a tool without parameters takes an empty object", async () => {
    const r = await collect({ kind: "chat", messages: user, params: { maxTokens: 20, temperature: 0 }, tools, toolChoice: { name: "get_time" } });
    expect(r.calls[0]!.name).toBe("get_time");
    expect(JSON.parse(r.calls.map((c) => c.arguments).join(""))).toEqual({});
  });

  it("logprobs: one per token, aligned with the text, also across a stop string", async () => {
    const r = await collect({ kind: "chat", messages: user, params: { maxTokens: 12, temperature: 0, logprobs: { top: 2 } } });
    expect(r.logprobs).toHaveLength(12);
    expect(r.logprobs.map((l) => l.token).join("")).toBe(r.text);
    const third = r.text.split(" ")[2]!;
    const cut = await collect({ kind: "chat", messages: user, params: { maxTokens: 12, temperature: 0, logprobs: { top: 0 }, stop: [` ${third}`] } });
    expect(cut.text).toBe(r.text.slice(0, r.text.indexOf(` ${third}`)));
    expect(cut.logprobs.map((l) => l.token).join("").startsWith(cut.text)).toBe(true);
  });

  it("a schema that does not compile is an invalid_request EngineError, not retryable", async () => {
    const err: unknown = await engine
      .generate(
        { kind: "chat", messages: user, params: { maxTokens: 4 }, responseFormat: { type: "json_schema", name: "s", strict: true, schema: { type: "object", properties: { a: { pattern: "x" } } } } },
        { signal: new AbortController().signal, onDelta: () => undefined },
      )
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: "invalid_request", retryable: false });
  });

  it("embeds each input into the model's embedding size, deterministically", async () => {
    const a = await engine.embed!(["the cat", "the dog"], new AbortController().signal);
    const b = await engine.embed!(["the cat"], new AbortController().signal);
    expect(a.vectors.map((v) => v.length)).toEqual([64, 64]);
    expect([...b.vectors[0]!]).toEqual([...a.vectors[0]!]);
    expect([...a.vectors[1]!]).not.toEqual([...a.vectors[0]!]);
    expect(a.promptTokens).toBeGreaterThan(b.promptTokens);
  });
});

describe("DeltaStream", () => {
  it("holds back possible stop prefixes and cuts at the earliest stop", () => {
    const out: [string, number][] = [];
    const s = new DeltaStream(["END", "xy"], (t, n) => out.push([t, n]));
    expect(s.push("hello E", 1)).toBe(false);
    expect(s.push("N", 1)).toBe(false);
    expect(out).toEqual([["hello ", 1]]);
    expect(s.push("dless x", 1)).toBe(false);
    expect(s.push("yEND", 1)).toBe(true);
    expect(out.map(([t]) => t).join("")).toBe("hello ENdless ");
    expect(out.reduce((n, [, k]) => n + k, 0)).toBe(2);
    expect(s.consumedTokens).toBe(4);
  });

  it("flush releases held text with its token", () => {
    const out: [string, number][] = [];
    const s = new DeltaStream(["stop"], (t, n) => out.push([t, n]));
    s.push("a st", 1);
    s.flush();
    expect(out).toEqual([["a st", 1]]);
  });
});
