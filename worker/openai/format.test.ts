import { describe, expect, it } from "vitest";
import { newResponseId, sseEvent, streamChunk, textEventEncoder, type ResponseMeta } from "./format.ts";

const decoder = new TextDecoder();

describe("textEventEncoder", () => {
  const texts = ["", "hello", " world\n", 'quote " and \\ backslash', "\u0000\u001f control", "émoji 🎉 \u2028 separators \u2029", "</script>"];
  const metas: ResponseMeta[] = [
    { id: "chatcmpl-1", created: 1_764_000_000, model: "acme/tiny-1", endpoint: "chat", includeUsage: false },
    { id: "chatcmpl-2", created: 1_764_000_001, model: 'odd "model" \\ name', endpoint: "chat", includeUsage: true },
    { id: "cmpl-3", created: 1_764_000_002, model: "acme/tiny-1", endpoint: "completion", includeUsage: false },
    { id: "cmpl-4", created: 1_764_000_003, model: "acme/tiny-1", endpoint: "completion", includeUsage: true },
  ];

  it("makes the same bytes as the general chunk, for each endpoint, usage option, choice and text", () => {
    for (const meta of metas) {
      const encode = textEventEncoder(meta);
      for (const index of [0, 3]) {
        for (const text of texts) {
          expect(decoder.decode(encode(index, text))).toBe(decoder.decode(sseEvent(streamChunk(meta, { index, text }, null))));
        }
      }
    }
  });

  it("is one well-formed SSE event whose data is the chunk", () => {
    const event = decoder.decode(textEventEncoder(metas[1]!)(0, "hi"));
    expect(event.startsWith("data: ")).toBe(true);
    expect(event.endsWith("\n\n")).toBe(true);
    expect(JSON.parse(event.slice(6))).toEqual({
      id: "chatcmpl-2",
      created: 1_764_000_001,
      model: 'odd "model" \\ name',
      object: "chat.completion.chunk",
      choices: [{ index: 0, delta: { content: "hi" }, logprobs: null, finish_reason: null }],
      usage: null,
    });
  });
});

describe("newResponseId", () => {
  it("is the endpoint's prefix and 32 hex digits, unique, and ordered by time", () => {
    expect(newResponseId("chat")).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(newResponseId("completion")).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(newResponseId("embedding")).toMatch(/^embd-[0-9a-f]{32}$/);
    const ids = Array.from({ length: 1000 }, () => newResponseId("chat", 1_764_000_000_000));
    expect(new Set(ids).size).toBe(1000);
    // Later ids sort after earlier ones (D1 appends them to the key's index), across a digit carry.
    const times = [0, 1, 15, 16, 255, 256, 1_764_000_000_000, 1_764_000_000_001, 2 ** 47];
    const inOrder = times.map((t) => newResponseId("chat", t));
    expect([...inOrder].sort()).toEqual(inOrder);
    expect(inOrder[0]!.slice(9, 21)).toBe("000000000000");
  });
});
