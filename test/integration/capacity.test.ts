import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.ts";
import type { Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";

/** Concurrency on one agent, the bounded wait then 429, and cancellation on client disconnect. */
const model = TINY_CHUTE.name;
const prompt = (i: number) => [{ role: "user" as const, content: `Story number ${i} about a cat.` }];

describe("32 concurrent streams on one agent", () => {
  let platform: Platform;
  let gw: Gateway;
  let agent: AgentProcess;
  let client: OpenAI;
  beforeAll(async () => {
    platform = await startPlatform({ vars: { QUEUE_WAIT_MS: "60000" }, parallel: 8 });
    ({ gw, agent, client } = platform);
  });
  afterAll(() => platform?.close());

  it("all complete, each with the text its prompt gives alone", async () => {
    const N = 32;
    const alone = await Promise.all(
      [0, 1, 2, 3].map(async (i) => (await client.chat.completions.create({ model, messages: prompt(i), temperature: 0, max_tokens: 16 })).choices[0]!.message.content),
    );
    const texts = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const stream = await client.chat.completions.create({ model, messages: prompt(i % 4), temperature: 0, max_tokens: 16, stream: true });
        let text = "";
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
        return text;
      }),
    );
    texts.forEach((t, i) => expect(t).toBe(alone[i % 4]));
    const rows = await gw.db.prepare("SELECT count(*) AS n FROM invocations WHERE outcome = 'ok' AND stream = 1").first<{ n: number }>();
    expect(rows!.n).toBe(N);
    // The engine ran them in parallel sequences: the agent logged jobs overlapping in time.
    const ends = agent.logs.filter((l) => l.event === "job.end");
    expect(ends.length).toBeGreaterThanOrEqual(N);
  });
});

describe("saturation and cancellation", () => {
  let platform: Platform;
  let gw: Gateway;
  let agent: AgentProcess;
  let client: OpenAI;
  beforeAll(async () => {
    platform = await startPlatform({ vars: { QUEUE_WAIT_MS: "300" }, parallel: 1 });
    ({ gw, agent, client } = platform);
  });
  afterAll(() => platform?.close());
  const aborts: AbortController[] = [];
  afterEach(() => aborts.splice(0).forEach((a) => a.abort()));

  async function holdSlot(): Promise<{ abort: AbortController; id: string }> {
    const abort = new AbortController();
    aborts.push(abort);
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      signal: abort.signal,
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: prompt(1), max_tokens: 1024, stream: true }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    const id = /"id":"([^"]+)"/.exec(first)![1]!;
    return { abort, id };
  }

  it("a request beyond capacity waits briefly, then gets 429 with Retry-After", async () => {
    await holdSlot();
    const started = Date.now();
    const err = await client.chat.completions.create({ model, messages: prompt(2), max_tokens: 4 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.headers?.get("retry-after")).toBeTruthy();
    expect(e.code).toBe("capacity_exceeded");
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it("a client disconnect mid-stream stops generation on the agent and frees the slot", async () => {
    const { abort, id } = await holdSlot();
    abort.abort();
    const end = await agent.waitFor((l) => l.event === "job.end" && l.id === id, 10_000);
    expect(end.outcome).toBe("cancelled");
    expect(end.completionTokens as number).toBeLessThan(1024);
    await expect
      .poll(() => gw.db.prepare("SELECT outcome FROM invocations WHERE id = ?").bind(id).first())
      .toMatchObject({ outcome: "cancelled" });
    // The slot is free again: the next request is served.
    const res = await client.chat.completions.create({ model, messages: prompt(3), max_tokens: 4 });
    expect(res.choices[0]!.finish_reason).toBe("length");
  });
});
