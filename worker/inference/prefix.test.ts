import { describe, expect, it } from "vitest";
import { mayTakeOver, prefixHashes } from "./prefix.ts";

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

  describe("mayTakeOver: a freed slot goes to the next request only where the router's affinity would send it", () => {
    const user = (content: string) => ({ role: "user" as const, content });
    const assistant = (content: string) => ({ role: "assistant" as const, content });
    const chat = (...messages: { role: "system" | "user" | "assistant"; content: string }[]) => prefixHashes({ kind: "chat", messages, params });
    const a1 = chat(sys, user("How do I deploy a chute?"));
    const a2 = chat(sys, user("How do I deploy a chute?"), assistant("With the CLI."), user("And then?"));
    const b1 = chat(sys, user("What does a miner earn?"));
    const b2 = chat(sys, user("What does a miner earn?"), assistant("A share of each charge."), user("How much?"));

    it("takes over for the same conversation, a repeat, a fresh one behind the same system prompt, or nothing to route by", () => {
      expect(mayTakeOver(a1, a2)).toBe(true); // the next turn of the conversation that held the slot
      expect(mayTakeOver(a2, a1)).toBe(true); // all of it is in the instance's cache already
      expect(mayTakeOver(a1, a1)).toBe(true);
      expect(mayTakeOver(a1, b1)).toBe(true); // only its own prompt is new: the system prompt is there
      expect(mayTakeOver(a1, chat(user("short")))).toBe(true);
      expect(mayTakeOver([], [])).toBe(true);
    });

    it("asks the router for a conversation with history of its own, or one that shares nothing with the slot's", () => {
      // The next turn of conversation B, right after conversation A freed a slot: B's history is elsewhere.
      expect(mayTakeOver(a1, b2)).toBe(false);
      expect(mayTakeOver(a2, b2)).toBe(false);
      expect(mayTakeOver(a1, chat(user("A different question entirely, with no shared system prompt at all.")))).toBe(false);
      expect(mayTakeOver([], a1)).toBe(false);
      // Completions: prompts sharing their first 512 characters, a new tail.
      const base = "x".repeat(600);
      const p1 = prefixHashes({ kind: "completion", prompt: base + "tail one", params });
      expect(mayTakeOver(p1, prefixHashes({ kind: "completion", prompt: base + "another tail", params }))).toBe(true);
      expect(mayTakeOver(p1, prefixHashes({ kind: "completion", prompt: "y".repeat(600), params }))).toBe(false);
    });
  });
});
