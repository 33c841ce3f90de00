import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentFrame } from "../protocol/index.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../test/support/upstream-double.ts";
import { createOpenAIUpstreamEngine } from "./engines/openai-upstream.ts";
import { FRAME_INTERVAL_MS, JobRunner, OUTBOUND_LIMIT, type ServedInstance } from "./job-runner.ts";

/** The job runner against a real engine (openai-upstream on the vLLM test double), with the socket's side observed. */
let upstream: UpstreamDouble;
beforeAll(async () => {
  upstream = await startUpstreamDouble();
});
afterAll(() => upstream?.close());

function instance(): ServedInstance {
  return { chute: "c", instanceId: "i", engine: createOpenAIUpstreamEngine({ kind: "openai-upstream", baseURL: upstream.url, model: "m", parallel: 2 }), active: 0, requestsServed: 0, tokensServed: 0 };
}

const job = (maxTokens: number) => ({ kind: "completion" as const, prompt: "p", params: { maxTokens } });

describe("job runner", () => {
  it("coalesces deltas into few frames and counts what it served", async () => {
    const frames: AgentFrame[] = [];
    const runner = new JobRunner((f) => (frames.push(f), true), () => 0);
    const inst = instance();
    await runner.run(inst, "j1", job(2000), undefined);
    const chunks = frames.filter((f) => f.type === "chunk");
    expect(chunks.reduce((n, c) => n + c.tokens, 0)).toBe(2000);
    expect(chunks.length).toBeLessThan(2000);
    expect(frames.at(-1)).toMatchObject({ type: "done", id: "j1", usage: { completionTokens: 2000 } });
    expect(inst).toMatchObject({ active: 0, requestsServed: 1, tokensServed: 2000 });
  });

  it("an engine yielding one token at a time: the first goes at once, the rest in frames at most every FRAME_INTERVAL_MS", async () => {
    upstream.set({ delayPerTokenMs: 2 });
    try {
      const frames: { frame: AgentFrame; at: number }[] = [];
      const runner = new JobRunner((f) => (frames.push({ frame: f, at: performance.now() }), true), () => 0);
      // Tokens about 2 ms apart for about six intervals: one frame each would be a frame per token.
      const tokens = 3 * FRAME_INTERVAL_MS;
      await runner.run(instance(), "j4", job(tokens), undefined);
      const chunks = frames.filter((f) => f.frame.type === "chunk");
      expect(chunks[0]!.frame).toMatchObject({ tokens: 1, text: "tok0" });
      expect(chunks.reduce((n, c) => n + (c.frame.type === "chunk" ? c.frame.tokens : 0), 0)).toBe(tokens);
      expect(chunks.length).toBeGreaterThanOrEqual(4);
      expect(chunks.length).toBeLessThan(tokens / 10);
      // (The last one goes when the job ends, whatever the interval.)
      for (let i = 2; i < chunks.length - 1; i++) expect(chunks[i]!.at - chunks[i - 1]!.at).toBeGreaterThanOrEqual(FRAME_INTERVAL_MS - 2); // timers round to whole ms
    } finally {
      upstream.reset();
    }
  });

  it("jobs streaming at once send their frames on the same ticks (one message, not one per job)", async () => {
    upstream.set({ delayPerTokenMs: 2 });
    try {
      const sent: { id: string; at: number }[] = [];
      const runner = new JobRunner((f) => (f.type === "chunk" && sent.push({ id: f.id, at: performance.now() }), true), () => 0);
      // Tokens about 2 ms apart for about six intervals.
      const tokens = 3 * FRAME_INTERVAL_MS;
      const a = runner.run(instance(), "j5", job(tokens), undefined);
      // The second job starts out of step with the first: its own timer would put its frames between the first's.
      await new Promise((r) => setTimeout(r, 7));
      await Promise.all([a, runner.run(instance(), "j6", job(tokens), undefined)]);
      // Each job's first frame goes at once and its last when it ends: the ones between are ticked.
      const between = (id: string) => sent.filter((s) => s.id === id).slice(1, -1);
      const [mine, theirs] = [between("j6"), between("j5")];
      expect(mine.length).toBeGreaterThanOrEqual(3);
      const shared = mine.filter((s) => theirs.some((t) => Math.abs(t.at - s.at) < 1)).length;
      expect(shared).toBeGreaterThanOrEqual(Math.ceil(mine.length * 0.75));
    } finally {
      upstream.reset();
    }
  });

  it("bounds the outbound buffer: a job whose output the gateway does not read ends with an error", async () => {
    const frames: AgentFrame[] = [];
    // The socket reports a backlog above the limit, as when the gateway stopped reading.
    const runner = new JobRunner((f) => (frames.push(f), true), () => OUTBOUND_LIMIT + 1);
    const inst = instance();
    await runner.run(inst, "j2", job(100_000), undefined);
    const chunks = frames.filter((f) => f.type === "chunk");
    expect(chunks).toHaveLength(0);
    expect(frames).toHaveLength(1);
    expect(frames[0]).toMatchObject({ type: "error", id: "j2", retryable: false, message: expect.stringMatching(/outbound buffer is full/) });
    expect(inst.active).toBe(0);
    expect(runner.inflight).toBe(0);
  });

  it("runs a job's choices at once, each in its own frames, and reports each one's finish", async () => {
    const frames: AgentFrame[] = [];
    const runner = new JobRunner((f) => (frames.push(f), true), () => 0);
    const inst = instance();
    await runner.run(inst, "j3", { kind: "completion", prompt: "p", prompts: ["p", "q"], n: 2, params: { maxTokens: 5 } }, undefined);
    const chunks = frames.filter((f) => f.type === "chunk");
    const text = [0, 1, 2, 3].map((i) => chunks.filter((c) => c.choice === i).map((c) => c.text).join(""));
    expect(text).toEqual(Array.from({ length: 4 }, () => "tok0 tok1 tok2 tok3 tok4"));
    const done = frames.at(-1);
    expect(done).toMatchObject({
      type: "done",
      finishReason: "length",
      choices: [0, 1, 2, 3].map((index) => ({ index, finishReason: "length" })),
      usage: { completionTokens: 20 },
    });
    expect(upstream.requests.slice(-4).map((r) => r.body.prompt).sort()).toEqual(["p", "p", "q", "q"]);
    expect(inst).toMatchObject({ active: 0, requestsServed: 1, tokensServed: 20 });
  });
});
