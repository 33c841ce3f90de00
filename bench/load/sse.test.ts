import { describe, expect, it } from "vitest";
import { SseScanner } from "./sse.ts";
import { percentile } from "./stats.ts";

const chunk = (content: string, finish: string | null = null) =>
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
const usage = (n: number) => `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: n } })}\n\n`;

describe("SseScanner", () => {
  it("timestamps the first non-empty token, not the role chunk, across arbitrary splits", () => {
    const text = chunk("") + chunk("a") + chunk(" b") + chunk("", "length") + usage(2) + "data: [DONE]\n\n";
    for (const size of [1, 7, 64, text.length]) {
      const s = new SseScanner();
      for (let i = 0, t = 0; i < text.length; i += size, t++) s.push(text.slice(i, i + size), t);
      // The event is complete (and timestamped) with the second newline ending it.
      const eventEnd = text.indexOf("\n\n", text.indexOf('"a"')) + 1;
      expect(s.firstTokenAt).toBe(Math.floor(eventEnd / size));
      expect([s.tokens, s.contentEvents, s.done, s.error]).toEqual([2, 2, true, undefined]);
    }
  });

  it("counts content events when there is no usage chunk, and handles CRLF", () => {
    const s = new SseScanner();
    s.push((chunk("x") + chunk("y") + chunk("z") + "data: [DONE]\n\n").replaceAll("\n", "\r\n"), 1);
    expect([s.tokens, s.done]).toEqual([3, true]);
  });

  it("reports an error object or finish_reason error, before or after the first token", () => {
    const before = new SseScanner();
    before.push('data: {"error":{"message":"boom"}}\n\n', 0);
    expect(before.error).toBe("boom");
    const after = new SseScanner();
    after.push(chunk("a") + `data: ${JSON.stringify({ choices: [{ delta: {}, finish_reason: "error" }], error: { message: "miner gone" } })}\n\n`, 0);
    expect(after.error).toBe("miner gone");
  });
});

describe("percentile", () => {
  it("is the nearest rank", () => {
    const v = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(v, 50), percentile(v, 99), percentile(v, 100), percentile([5], 99)]).toEqual([50, 99, 100, 5]);
    expect(percentile([], 50)).toBeNaN();
  });
});
