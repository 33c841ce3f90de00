import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { makeSeed, minerNamed, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { instanceOf, UpstreamAgents } from "../support/upstream-agents.ts";

/**
 * Choosing instances: health-weighted least-outstanding routing, failure backoff, eviction of
 * stale agents, and prefix (KV-cache) affinity. Agents forward to upstream test doubles
 * (standing in for vLLM) so speed and failures can be set per instance.
 */
let gw: Gateway;
let client: OpenAI;
const fleet = new UpstreamAgents(() => gw);

const MINERS = ["miner-a", "miner-b", "miner-c"];
const idOf = (minerName: string) => minerNamed(gw.seed, minerName).id;

async function servedBy(id: string): Promise<string | null> {
  const row = await gw.db.prepare("SELECT instance_id FROM invocations WHERE id = ?").bind(id).first<{ instance_id: string | null }>();
  return row?.instance_id ?? null;
}

beforeAll(async () => {
  gw = await startGateway({
    seed: makeSeed({ minerNames: MINERS }),
    vars: { MINER_STALE_AFTER_MS: "1500", STREAM_IDLE_TIMEOUT_MS: "60000", QUEUE_WAIT_MS: "10000", SSE_KEEPALIVE_MS: "500", FIRST_TOKEN_TIMEOUT_MS: "4000" },
  });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterEach(() => fleet.stopAgents());
afterAll(async () => {
  await fleet.close();
  await gw?.close();
});

describe("routing", () => {
  it("a stalled agent (process stopped) is evicted after missed heartbeats: its stream ends with an error, its instance leaves the router, and it serves again once it resumes", async () => {
    const { agent } = await fleet.start("miner-a", { delayPerTokenMs: 20 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const stream = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [{ role: "user", content: "go" }],
      max_tokens: 500,
      stream: true,
    });
    let text = "";
    let stoppedAt = 0;
    const err = await (async () => {
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? "";
        if (!stoppedAt && text.trim().split(/\s+/).length >= 3) {
          agent.child.kill("SIGSTOP");
          stoppedAt = Date.now();
        }
      }
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("miner_disconnected");
    // Evicted after 1.5 s of silence (alarm granularity adds a little), long before the 60 s idle timeout.
    expect(Date.now() - stoppedAt).toBeLessThan(6_000);
    expect((await routerSnapshot(gw, TINY_CHUTE.id)).instances).toHaveLength(0);
    expect(gw.logs.some((l) => l.event === "miner.stale")).toBe(true);

    agent.child.kill("SIGCONT");
    await waitForInstances(gw, TINY_CHUTE.id, 1, 20_000);
    const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "again" }], max_tokens: 3 });
    expect(res.choices[0]?.finish_reason).toBe("length");
  });

  it("an instance that fails repeatedly is disabled with backoff (requests skip it), and re-enabled when it recovers", async () => {
    const bad = await fleet.start("miner-a", { failWithStatus: 500, failMessage: "CUDA error" }, 4);
    await fleet.start("miner-b", {}, 1);
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      // Each request a conversation of its own (a prefix long enough to route by): none takes over
      // the slot the last one freed on miner-b, so the router routes every one of them.
      const content = `q${i}: ${"Please answer briefly. ".repeat(4)}`;
      const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content }], max_tokens: 2 });
      ids.push(res.id);
    }
    // Every request was served (the failures were retried invisibly on miner-b)...
    for (const id of ids) await expect.poll(() => servedBy(id)).toBe(instanceOf("miner-b"));
    const attempts = await Promise.all(
      ids.map(async (id) => (await gw.db.prepare("SELECT attempts FROM invocations WHERE id = ?").bind(id).first<{ attempts: number }>())!.attempts),
    );
    // ...the first three paid a retry; then miner-a was out of rotation and requests went straight to miner-b.
    expect(attempts.slice(0, 3)).toEqual([2, 2, 2]);
    expect(attempts.slice(3)).toEqual([1, 1, 1]);
    expect(bad.upstream.requests).toHaveLength(3);
    const health = (await routerSnapshot(gw, TINY_CHUTE.id)).instances.find((i) => i.minerId === idOf("miner-a"))!.health;
    expect(health.consecutiveFailures).toBe(3);
    expect(health.disabledUntil).toBeGreaterThan(Date.now() - 1_000);

    // The upstream recovers; after the backoff, miner-a takes work again when miner-b is busy, and a success clears it.
    bad.upstream.reset({ delayPerTokenMs: 1 });
    await new Promise((r) => setTimeout(r, 1_200));
    const both = await Promise.all(
      [0, 1].map(() => client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "x" }], max_tokens: 30 })),
    );
    expect(both.every((r) => r.choices[0]?.finish_reason === "length")).toBe(true);
    // The router hears how a request went when its slot goes back (within the release wait).
    const healthOfA = async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances.find((i) => i.minerId === idOf("miner-a"))!.health;
    await expect.poll(healthOfA).toMatchObject({ consecutiveFailures: 0, disabledUntil: null });
    expect((await healthOfA()).served).toBeGreaterThanOrEqual(1);
  });

  it("traffic shifts to the fast instance when instances differ in speed", async () => {
    await fleet.start("miner-a", { delayPerTokenMs: 25 }, 4); // slow, and first by id
    await fleet.start("miner-b", {}, 4); // fast
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    const ids: string[] = [];
    const worker = async () => {
      for (let i = 0; i < 10; i++) {
        const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hello" }], max_tokens: 20 });
        ids.push(res.id);
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    // Invocations are recorded after the response (with its settle, batched): wait for all 30.
    const allServed = async () => (await Promise.all(ids.map((id) => servedBy(id)))).filter((s) => s !== null).length;
    await expect.poll(allServed).toBe(30);
    const served = await Promise.all(ids.map((id) => servedBy(id)));
    const fast = served.filter((s) => s === instanceOf("miner-b")).length;
    const slow = served.filter((s) => s === instanceOf("miner-a")).length;
    expect(fast + slow).toBe(30);
    expect(fast).toBeGreaterThanOrEqual(3 * slow);
    const snap = await routerSnapshot(gw, TINY_CHUTE.id);
    const tps = (m: string) => snap.instances.find((i) => i.minerId === idOf(m))!.health.tokensPerSecond!;
    expect(tps("miner-b")).toBeGreaterThan(tps("miner-a"));
  });

  it("non-streaming answers: a short job and one that outlasts the session's hold are whole, with the time to first token the engine took", async () => {
    // The first token after 300 ms, then one per 20 ms: 10 tokens end well inside the session's
    // 1 s hold (answered whole), 120 tokens run 2.7 s (the rest comes as a stream).
    await fleet.start("miner-a", { delayBeforeFirstTokenMs: 300, delayPerTokenMs: 20 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    for (const maxTokens of [10, 120]) {
      const started = Date.now();
      const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hello" }], max_tokens: maxTokens });
      const tookMs = Date.now() - started;
      expect(res.choices[0]?.message.content?.trim().split(/\s+/)).toHaveLength(maxTokens);
      expect(res.usage?.completion_tokens).toBe(maxTokens);
      // Recorded after the response (with its settle, batched).
      const recorded = () => gw.db.prepare("SELECT ttft_ms, completion_tokens FROM invocations WHERE id = ?").bind(res.id).first<{ ttft_ms: number; completion_tokens: number }>();
      await expect.poll(async () => (await recorded())?.completion_tokens).toBe(maxTokens);
      const row = await recorded();
      // The first token's time, not the whole job's: held events do not count as slower.
      expect(row?.ttft_ms).toBeGreaterThanOrEqual(290);
      expect(row?.ttft_ms).toBeLessThan(Math.min(tookMs - 100, 900));
    }
  });

  it("requests sharing a conversation prefix go back to the instance that served it, while its load allows", async () => {
    await fleet.start("miner-a", { delayPerTokenMs: 5 }, 2);
    await fleet.start("miner-b", { delayPerTokenMs: 5 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    const system = { role: "system" as const, content: "You are Sluice's support assistant. Answer briefly and cite the docs. ".repeat(4) };
    const hitsBefore = (await routerSnapshot(gw, TINY_CHUTE.id)).affinityHits;

    // A long request keeps miner-a (first by id) busy, so the conversation starts on miner-b.
    const blocker = client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "long" }], max_tokens: 200 });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances.find((i) => i.minerId === idOf("miner-a"))?.inflight).toBe(1);
    const turn1 = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [system, { role: "user", content: "How do I deploy?" }], max_tokens: 5 });
    await expect.poll(() => servedBy(turn1.id)).toBe(instanceOf("miner-b"));
    await blocker;
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances.every((i) => i.inflight === 0)).toBe(true);

    // Both idle: the next turn goes back to miner-b, for its prefix.
    const turn2 = await client.chat.completions.create({
      model: TINY_CHUTE.name,
      messages: [system, { role: "user", content: "How do I deploy?" }, { role: "assistant", content: turn1.choices[0]!.message.content ?? "" }, { role: "user", content: "And then?" }],
      max_tokens: 5,
    });
    await expect.poll(() => servedBy(turn2.id)).toBe(instanceOf("miner-b"));
    // An unrelated conversation is routed on load and health alone: no affinity hit.
    await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "A different question entirely, with no shared system prompt at all." }], max_tokens: 5 });
    expect((await routerSnapshot(gw, TINY_CHUTE.id)).affinityHits).toBe(hitsBefore + 1);
  });

  it("a conversation's next turn goes to the instance holding it, not to the slot another conversation behind the same system prompt just freed", async () => {
    await fleet.start("miner-a", { delayPerTokenMs: 1 }, 2);
    await fleet.start("miner-b", { delayPerTokenMs: 1 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    type Message = OpenAI.Chat.ChatCompletionMessageParam;
    const system: Message = { role: "system", content: "You are Sluice's billing assistant. Explain every charge in plain words. ".repeat(4) };
    const turn = async (history: Message[], question: string) => {
      const messages: Message[] = [...history, { role: "user", content: question }];
      const res = await client.chat.completions.create({ model: TINY_CHUTE.name, messages, max_tokens: 2 });
      return { id: res.id, history: [...messages, { role: "assistant", content: res.choices[0]!.message.content ?? "" } as Message] };
    };
    // Conversation A starts on miner-a (both idle: first by id)...
    let a = await turn([system], "Why was I charged twice?");
    await expect.poll(() => servedBy(a.id)).toBe(instanceOf("miner-a"));
    // ...and B on miner-b, while a long request on miner-a puts its load past the affinity's slack.
    const blocker = client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "long" }], max_tokens: 200 });
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances.find((i) => i.minerId === idOf("miner-a"))?.inflight).toBe(1);
    let b = await turn([system], "What is a hold?");
    await expect.poll(() => servedBy(b.id)).toBe(instanceOf("miner-b"));
    await blocker;
    // The two take turns, each sent as soon as the other's answer is in: the slot the last one
    // freed is still on its way back to the router, but it holds the other conversation.
    for (let k = 2; k <= 10; k++) {
      a = await turn(a.history, `And question ${k} of A?`);
      b = await turn(b.history, `And question ${k} of B?`);
      await expect.poll(() => servedBy(a.id)).toBe(instanceOf("miner-a"));
      await expect.poll(() => servedBy(b.id)).toBe(instanceOf("miner-b"));
    }
  });

  it("a slow first token gets SSE keep-alive comments, then the answer, on the same 200 stream", async () => {
    await fleet.start("miner-a", { delayBeforeFirstTokenMs: 2_000 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "slow" }], max_tokens: 4, stream: true }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const firstData = text.indexOf("data: ");
    const comments = text.slice(0, firstData).match(/^: keep-alive$/gm) ?? [];
    expect(comments.length).toBeGreaterThanOrEqual(3); // 2 s at one per 0.5 s
    expect(text.slice(-200)).toMatch(/data: \[DONE\]\n\n$/);
    expect(text).toContain('"finish_reason":"length"');
    // The official client ignores the comments.
    const stream = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "slow" }], max_tokens: 4, stream: true });
    let out = "";
    for await (const chunk of stream) out += chunk.choices[0]?.delta.content ?? "";
    expect(out.trim().split(/\s+/)).toHaveLength(4);
  });

  it("a stream that never gets a first token ends, after its keep-alives, with an error chunk and [DONE], and releases everything", async () => {
    const { upstream } = await fleet.start("miner-a", { stallBeforeFirstToken: true }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const closed = new Promise((resolve) => upstream.events.once("client-closed", resolve));
    const stream = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "never" }], max_tokens: 4, stream: true });
    const err = await (async () => {
      for await (const chunk of stream) void chunk;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toMatch(/timeout/);
    expect(String((err as Error).message)).toMatch(/produced nothing for 4 s/);
    await closed; // the engine's upstream request was cancelled
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });

  it("when every instance fails before the first token, the client gets the failure (502), not 'no capacity'", async () => {
    await fleet.start("miner-a", { failWithStatus: 500, failMessage: "CUDA error" }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const err = await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "x" }], max_tokens: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("engine_error");
  });

  it("a stream that stalls after its first tokens gets keep-alives, and a client that leaves during the stall cancels the job", async () => {
    const { upstream } = await fleet.start("miner-a", { stallAfterTokens: 2 }, 2);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const closed = new Promise((resolve) => upstream.events.once("client-closed", resolve));
    const abort = new AbortController();
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "stall" }], max_tokens: 10, stream: true }),
      signal: abort.signal,
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let text = "";
    // Two tokens, then the stall: keep-alive comments follow the data.
    while (!/tok1[\s\S]*: keep-alive\n\n[\s\S]*: keep-alive\n\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended: ${text}`);
      text += new TextDecoder().decode(value);
    }
    const leftAt = Date.now();
    abort.abort();
    await closed; // the engine's upstream request was cancelled...
    expect(Date.now() - leftAt).toBeLessThan(3_000); // ...within a keep-alive or two, not at the 60 s idle timeout
    await expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);
  });
});
