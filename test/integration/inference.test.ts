import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { readSse } from "../support/sse.ts";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";

/** The whole path with the real engine: official client -> workerd gateway -> agent -> llama.cpp. */
let platform: Platform;
let gw: Gateway;
let client: OpenAI;
const model = TINY_CHUTE.name;
const messages = [
  { role: "system" as const, content: "You are a helpful assistant." },
  { role: "user" as const, content: "Tell me about the cat and the dog." },
];

beforeAll(async () => {
  platform = await startPlatform();
  ({ gw, client } = platform);
});
afterAll(() => platform?.close());

async function greedy(extra: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) {
  return client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 24, ...extra });
}

describe("chat completions", () => {
  it("lists the chute in /v1/models", async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toContain(model);
    const one = await client.models.retrieve(model);
    expect(one.id).toBe(model);
  });

  it("non-streaming: text, usage with prompt, completion and total, finish_reason length", async () => {
    const res = await greedy();
    expect(res.object).toBe("chat.completion");
    expect(res.id).toMatch(/^chatcmpl-/);
    expect(res.model).toBe(model);
    expect(res.choices[0]!.finish_reason).toBe("length");
    expect(res.choices[0]!.message.role).toBe("assistant");
    expect(res.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(res.usage!.completion_tokens).toBe(24);
    expect(res.usage!.prompt_tokens).toBeGreaterThan(10);
    expect(res.usage!.total_tokens).toBe(res.usage!.prompt_tokens + 24);
  });

  it("greedy is deterministic, and the streamed text equals the non-streamed text", async () => {
    const a = await greedy();
    const b = await greedy();
    expect(b.choices[0]!.message.content).toBe(a.choices[0]!.message.content);
    const stream = await client.chat.completions.create({
      model,
      messages,
      temperature: 0,
      max_tokens: 24,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    const ids = new Set<string>();
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      ids.add(chunk.id);
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(ids.size).toBe(1);
    expect(text).toBe(a.choices[0]!.message.content);
    expect(finish).toBe("length");
    expect(usage).toEqual(a.usage);
  });

  it("streams SSE with one id, the usage chunk last before [DONE]", async () => {
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages, max_tokens: 8, stream: true, stream_options: { include_usage: true } }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = await readSse(res);
    expect(events.at(-1)).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { id: string; choices: unknown[]; usage: unknown });
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 8 });
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
  });

  it("max_completion_tokens is honoured", async () => {
    const res = await client.chat.completions.create({ model, messages, temperature: 0, max_completion_tokens: 5 });
    expect(res.usage!.completion_tokens).toBe(5);
    expect(res.choices[0]!.finish_reason).toBe("length");
  });

  it("stop ends the text before the stop sequence with finish_reason stop", async () => {
    const full = (await greedy({ max_tokens: 40 })).choices[0]!.message.content!;
    const words = full.trim().split(/\s+/);
    const stopWord = words.find((w, i) => i >= 3 && w.length >= 3 && full.indexOf(w) > 0)!;
    expect(stopWord).toBeTruthy();
    const res = await greedy({ max_tokens: 40, stop: [stopWord] });
    expect(res.choices[0]!.finish_reason).toBe("stop");
    expect(res.choices[0]!.message.content).toBe(full.slice(0, full.indexOf(stopWord)));
  });

  it("temperature with a seed is reproducible; top_p is accepted", async () => {
    const a = await greedy({ temperature: 1, top_p: 0.9, seed: 1234 });
    const b = await greedy({ temperature: 1, top_p: 0.9, seed: 1234 });
    expect(b.choices[0]!.message.content).toBe(a.choices[0]!.message.content);
  });

  it("records the invocation in D1 with tokens, cost and timings", async () => {
    const res = await greedy({ max_tokens: 3 });
    await expect
      .poll(() => gw.db.prepare("SELECT * FROM invocations WHERE id = ?").bind(res.id).first())
      .toMatchObject({ outcome: "ok", completion_tokens: 3, prompt_tokens: res.usage!.prompt_tokens, miner_id: gw.seed.miners[0]!.id, attempts: 1, endpoint: "chat" });
    const row = await gw.db.prepare("SELECT cost_nano, ttft_ms, duration_ms FROM invocations WHERE id = ?").bind(res.id).first<{ cost_nano: number; ttft_ms: number; duration_ms: number }>();
    const expected = Math.ceil((res.usage!.prompt_tokens * TINY_CHUTE.promptPriceNanoPerM + 3 * TINY_CHUTE.completionPriceNanoPerM) / 1e6);
    expect(row!.cost_nano).toBe(expected);
    expect(row!.ttft_ms).toBeGreaterThanOrEqual(0);
    expect(row!.duration_ms).toBeGreaterThanOrEqual(row!.ttft_ms);
  });
});

describe("legacy completions", () => {
  it("answers as text_completion, streamed text equal to non-streamed", async () => {
    const res = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
    expect(res.object).toBe("text_completion");
    expect(res.choices[0]!.finish_reason).toBe("length");
    expect(res.usage!.completion_tokens).toBe(12);
    const stream = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 12, temperature: 0, stream: true });
    let text = "";
    for await (const chunk of stream) {
      expect(chunk.object).toBe("text_completion");
      text += chunk.choices[0]?.text ?? "";
    }
    expect(text).toBe(res.choices[0]!.text);
  });

  it("defaults to 16 tokens like OpenAI", async () => {
    const res = await client.completions.create({ model, prompt: "The dog", temperature: 0 });
    expect(res.usage!.completion_tokens).toBe(16);
  });
});
