import { describe, expect, it } from "vitest";
import { MAX_FRAME_BYTES, PROTOCOL_VERSION, parseAgentFrame, parseGatewayFrame } from "./index.ts";

describe("wire protocol", () => {
  it("parses well-formed frames in both directions", () => {
    const auth = parseAgentFrame(
      JSON.stringify({ type: "auth", v: PROTOCOL_VERSION, minerId: "m1", nonce: "n", credential: { type: "sr25519", signature: "ab".repeat(64) } }),
    );
    expect(auth.ok && auth.frame.type).toBe("auth");
    const chunk = parseAgentFrame(JSON.stringify({ type: "chunk", id: "j1", text: "hi", tokens: 2 }));
    expect(chunk).toEqual({ ok: true, frame: { type: "chunk", id: "j1", text: "hi", tokens: 2 } });
    const job = parseGatewayFrame(
      JSON.stringify({ type: "job", id: "j1", instanceId: "i", spec: { kind: "completion", prompt: "p", params: { maxTokens: 4 } } }),
    );
    expect(job.ok).toBe(true);
  });

  it("refuses malformed frames with a reason", () => {
    expect(parseAgentFrame("{nope").ok).toBe(false);
    expect(parseAgentFrame(JSON.stringify({ type: "chunk", id: "j1", text: "x", tokens: 0 })).ok).toBe(false);
    expect(parseAgentFrame(JSON.stringify({ type: "teleport" })).ok).toBe(false);
    const badCode = parseAgentFrame(JSON.stringify({ type: "error", id: "j", code: "made_up", message: "m", retryable: true }));
    expect(badCode.ok).toBe(false);
    const r = parseAgentFrame(JSON.stringify({ type: "done", id: "j" }));
    expect(r.ok === false && r.error).toMatch(/finishReason/);
  });

  it("v1 additions are optional: old frames parse as before, new ones carry tool calls, logprobs, embeddings", () => {
    const toolChunk = parseAgentFrame(
      JSON.stringify({
        type: "chunk", id: "j", text: "", tokens: 3,
        toolCalls: [{ index: 0, id: "call_1", name: "f", arguments: "" }, { index: 0, arguments: "{}" }],
        logprobs: [{ token: "a", logprob: -0.5, bytes: [97], top: [] }],
      }),
    );
    expect(toolChunk.ok).toBe(true);
    const embeddings = parseAgentFrame(JSON.stringify({ type: "chunk", id: "j", text: "", tokens: 1, embeddings: [{ index: 0, base64: "AACAPw==" }] }));
    expect(embeddings.ok).toBe(true);
    const done = parseAgentFrame(
      JSON.stringify({ type: "done", id: "j", finishReason: "tool_calls", usage: { promptTokens: 1, completionTokens: 2, cachedPromptTokens: 0 }, timings: { ttftMs: 1, durationMs: 2 } }),
    );
    expect(done.ok).toBe(true);
    const job = parseGatewayFrame(
      JSON.stringify({
        type: "job", id: "j", instanceId: "i",
        spec: {
          kind: "chat", messages: [{ role: "user", content: "x" }],
          params: { maxTokens: 4, topK: 2, logprobs: { top: 1 } },
          tools: [{ name: "f" }], toolChoice: { name: "f" }, responseFormat: { type: "json_object" },
        },
      }),
    );
    expect(job.ok).toBe(true);
    // Bad values in the new fields are refused like any other.
    expect(parseAgentFrame(JSON.stringify({ type: "chunk", id: "j", text: "", tokens: 1, embeddings: [{ index: 0, base64: "not base64!" }] })).ok).toBe(false);
    expect(parseGatewayFrame(JSON.stringify({ type: "job", id: "j", instanceId: "i", spec: { kind: "chat", messages: [{ role: "user", content: "x" }], params: { maxTokens: 1, logprobs: { top: 21 } } } })).ok).toBe(false);
  });

  it("refuses frames over the size bound", () => {
    const big = JSON.stringify({ type: "chunk", id: "j", text: "x".repeat(MAX_FRAME_BYTES), tokens: 1 });
    expect(parseAgentFrame(big)).toEqual({ ok: false, error: "frame too large" });
  });
});
