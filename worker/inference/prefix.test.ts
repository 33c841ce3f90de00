import { describe, expect, it } from "vitest";
import { prefixHashes } from "./prefix.ts";

const params = { maxTokens: 1 };
const sys = { role: "system" as const, content: "You are a helpful assistant who answers in great detail. ".repeat(3) };

describe("prefixHashes", () => {
  it("lets the next turn of a conversation match every boundary of the previous one", () => {
    const turn1 = prefixHashes({ kind: "chat", messages: [sys, { role: "user", content: "Hi" }], params });
    const turn2 = prefixHashes({
      kind: "chat",
      messages: [sys, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello!" }, { role: "user", content: "More" }],
      params,
    });
    expect(turn1).toHaveLength(2);
    expect(turn2.slice(0, 2)).toEqual(turn1);
    expect(turn2).toHaveLength(4);
  });

  it("differs when an early message differs, and skips boundaries too short to matter", () => {
    const a = prefixHashes({ kind: "chat", messages: [sys, { role: "user", content: "A" }], params });
    const b = prefixHashes({ kind: "chat", messages: [{ ...sys, content: sys.content + "!" }, { role: "user", content: "A" }], params });
    expect(a.some((h) => b.includes(h))).toBe(false);
    expect(prefixHashes({ kind: "chat", messages: [{ role: "user", content: "short" }], params })).toEqual([]);
  });

  it("hashes completion prompts at doubling lengths, so prompts sharing a long start match", () => {
    const base = "x".repeat(600);
    const a = prefixHashes({ kind: "completion", prompt: base + "tail one", params });
    const b = prefixHashes({ kind: "completion", prompt: base + "another tail", params });
    expect(a.slice(0, 2)).toEqual(b.slice(0, 2)); // 256 and 512 characters
    expect(a.at(-1)).not.toEqual(b.at(-1));
  });
});
