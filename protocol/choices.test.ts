import { describe, expect, it } from "vitest";
import { choiceCount, choicesOf, type JobSpec } from "./index.ts";

describe("a job's choices", () => {
  it("expands prompts x n in OpenAI's order, as single-choice specs with consecutive seeds", () => {
    const spec: JobSpec = { kind: "completion", prompt: "a", prompts: ["a", "b"], n: 2, params: { maxTokens: 4, seed: 7 } };
    expect(choiceCount(spec)).toBe(4);
    const choices = choicesOf(spec);
    expect(choices.map((c) => [c.index, c.prompt])).toEqual([
      [0, 0],
      [1, 0],
      [2, 1],
      [3, 1],
    ]);
    expect(choices.map((c) => c.spec)).toEqual([
      { kind: "completion", prompt: "a", params: { maxTokens: 4, seed: 7 } },
      { kind: "completion", prompt: "a", params: { maxTokens: 4, seed: 8 } },
      { kind: "completion", prompt: "b", params: { maxTokens: 4, seed: 7 } },
      { kind: "completion", prompt: "b", params: { maxTokens: 4, seed: 8 } },
    ]);
  });

  it("leaves a single-choice job as it is, and unseeded copies unseeded", () => {
    const chat: JobSpec = { kind: "chat", messages: [{ role: "user", content: "x" }], params: { maxTokens: 2 } };
    expect(choicesOf(chat)).toEqual([{ index: 0, prompt: 0, spec: chat }]);
    const three = choicesOf({ ...chat, n: 3 });
    expect(three.map((c) => c.spec)).toEqual([chat, chat, chat]);
    expect(choiceCount({ ...chat, n: 3 })).toBe(3);
  });
});
