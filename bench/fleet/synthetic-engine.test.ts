import { describe, expect, it } from "vitest";
import type { JobSpec } from "../../protocol/index.ts";
import { SyntheticEngine } from "./synthetic-engine.ts";

const spec = (maxTokens: number): JobSpec => ({ kind: "chat", messages: [{ role: "user", content: "Write one short sentence about rivers." }], params: { maxTokens } });

describe("the fleet's synthetic engine", () => {
  it("produces exactly maxTokens one-token deltas, the first at once, the rest in paced bursts", async () => {
    const engine = new SyntheticEngine(4, { tokenIntervalMs: 5, frameMs: 20 });
    const deltas: { text: string; tokens: number; at: number }[] = [];
    const t0 = performance.now();
    const result = await engine.generate(spec(12), {
      signal: new AbortController().signal,
      onDelta: (text, tokens) => deltas.push({ text, tokens, at: performance.now() - t0 }),
    });
    expect(result).toMatchObject({ finishReason: "length", completionTokens: 12 });
    expect(result.promptTokens).toBeGreaterThan(0);
    expect(deltas).toHaveLength(12);
    expect(deltas.every((d) => d.tokens === 1 && d.text.length > 0)).toBe(true);
    expect(deltas[0]!.at).toBeLessThan(5);
    // 12 tokens at 5 ms each take ~55 ms after the first, handed over every 20 ms.
    expect(deltas.at(-1)!.at).toBeGreaterThanOrEqual(50);
  });

  it("stops at once when the job is cancelled", async () => {
    const engine = new SyntheticEngine(4, { tokenIntervalMs: 5, frameMs: 10 });
    const abort = new AbortController();
    let tokens = 0;
    const run = engine.generate(spec(1000), { signal: abort.signal, onDelta: () => tokens++ });
    setTimeout(() => abort.abort(new Error("cancelled by gateway")), 30);
    await expect(run).rejects.toThrow("cancelled by gateway");
    const seen = tokens;
    await new Promise((r) => setTimeout(r, 40));
    expect(tokens).toBe(seen);
    expect(seen).toBeLessThan(20);
  });
});
