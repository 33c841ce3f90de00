import OpenAI from "openai";
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { AgentProcess } from "../support/agent-process.ts";
import type { Gateway } from "../support/gateway.ts";
import { startPlatform, type Platform } from "../support/platform.ts";
import { routerSnapshot } from "../support/router.ts";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";

/** Concurrency on one agent, the bounded wait then 429, and clients that stop reading. */
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

  it("all complete, each with its own job's tokens, run in parallel sequences up to the chute's concurrency", async () => {
    // The agent offers 8 parallel sequences; the chute allows 4 per instance, and that is what is used.
    const [instance] = (await routerSnapshot(gw, TINY_CHUTE.id)).instances;
    expect(instance!.maxConcurrency).toBe(TINY_CHUTE.concurrency);
    const N = 32;
    // Each stream asks for its own length, so a stream that received another job's tokens shows.
    // (Texts are not compared with solo runs: llama.cpp's batched decoding is not bit-exact across
    // batch compositions, and the tiny random model has near-tied logits.)
    const results = await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const maxTokens = 8 + (i % 8);
        const stream = await client.chat.completions.create({
          model,
          messages: prompt(i % 4),
          temperature: 0,
          max_tokens: maxTokens,
          stream: true,
          stream_options: { include_usage: true },
        });
        let text = "";
        let usage: OpenAI.CompletionUsage | undefined;
        let finish: string | null = null;
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? "";
          finish = chunk.choices[0]?.finish_reason ?? finish;
          usage = chunk.usage ?? usage;
        }
        return { maxTokens, text, usage, finish };
      }),
    );
    for (const r of results) {
      expect(r.finish).toBe("length");
      expect(r.usage?.completion_tokens).toBe(r.maxTokens);
      expect(r.text.length).toBeGreaterThan(0);
    }
    // Rows are written in batches shortly after each response.
    await expect
      .poll(async () => (await gw.db.prepare("SELECT count(*) AS n FROM invocations WHERE outcome = 'ok' AND stream = 1").first<{ n: number }>())?.n)
      .toBe(N);
    // The engine ran them in parallel sequences: the agent's jobs overlapped in time.
    const ends = agent.logs.filter((l) => l.event === "job.end" && l.outcome === "ok");
    const edges = ends.flatMap((l) => {
      const end = Date.parse(l.ts as string);
      return [
        { t: end - (l.durationMs as number), d: 1 },
        { t: end, d: -1 },
      ];
    });
    edges.sort((a, b) => a.t - b.t || a.d - b.d);
    let running = 0;
    let peak = 0;
    for (const e of edges) peak = Math.max(peak, (running += e.d));
    expect(peak).toBeGreaterThanOrEqual(2);
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]!.inflight).toBe(0);
  });
});

describe("saturation and stalled clients", () => {
  let platform: Platform;
  let gw: Gateway;
  let agent: AgentProcess;
  let client: OpenAI;
  beforeAll(async () => {
    platform = await startPlatform({ vars: { QUEUE_WAIT_MS: "300" }, parallel: 1 });
    ({ gw, agent, client } = platform);
  });
  afterAll(() => platform?.close());
  const open: ClientRequest[] = [];
  afterEach(() => open.splice(0).forEach((r) => r.destroy()));

  /** Starts a long stream over a raw socket and reads its first chunk; `close()` drops the socket. */
  async function holdSlot(
    { maxTokens = TINY_CHUTE.maxOutputTokens, paused = false } = {},
  ): Promise<{ id: string; res: IncomingMessage; close: () => void }> {
    const req = request(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
    });
    open.push(req);
    req.end(JSON.stringify({ model, messages: prompt(1), max_tokens: maxTokens, stream: true }));
    const res = await new Promise<IncomingMessage>((resolve) => req.once("response", resolve));
    expect(res.statusCode).toBe(200);
    const first = await new Promise<string>((resolve) => res.once("data", (d: Buffer) => resolve(d.toString())));
    if (paused) res.pause();
    else res.resume(); // keep reading (and dropping) what arrives, as a live client does
    const id = /"id":"([^"]+)"/.exec(first)![1]!;
    return { id, res, close: () => req.destroy() };
  }

  it("a request beyond capacity waits briefly, then gets 429 with Retry-After", async () => {
    const held = await holdSlot();
    const started = Date.now();
    const err = await client.chat.completions.create({ model, messages: prompt(2), max_tokens: 4 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.headers?.get("retry-after")).toBeTruthy();
    expect(e.code).toBe("capacity_exceeded");
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    held.close();
    await agent.waitFor((l) => l.event === "job.end" && l.id === held.id);
  });

  it("a client that stops reading without closing cannot hold the slot past the job's end", async () => {
    const { id } = await holdSlot({ paused: true }); // reads nothing more, keeps the socket open
    const end = await agent.waitFor((l) => l.event === "job.end" && l.id === id, 20_000);
    expect(end.outcome).toBe("ok");
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]!.inflight).toBe(0);
    const res = await client.chat.completions.create({ model, messages: prompt(3), max_tokens: 4 });
    expect(res.choices[0]!.finish_reason).toBe("length");
  });
});
