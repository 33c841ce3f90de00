import { describe, expect, it } from "vitest";
import { MAX_FRAME_BYTES } from "../protocol/index.ts";
import { FrameBatch, type FrameSink } from "./frame-batch.ts";

/** A socket's side of the batch: the messages it was given, in order. */
function socket(): FrameSink & { messages: string[] } {
  const messages: string[] = [];
  return { messages, send: (m: string) => void messages.push(m) };
}

const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("FrameBatch", () => {
  it("sends the frames of one turn as one message, one per line, at the end of the turn", async () => {
    const out = new FrameBatch();
    const ws = socket();
    out.add(ws, '{"type":"job","id":"a"}', true);
    out.add(ws, '{"type":"job","id":"b"}', true);
    expect(ws.messages).toEqual([]);
    await turn();
    expect(ws.messages).toEqual(['{"type":"job","id":"a"}\n{"type":"job","id":"b"}']);
    out.add(ws, '{"type":"job","id":"c"}', true);
    await turn();
    expect(ws.messages.at(-1)).toBe('{"type":"job","id":"c"}');
  });

  it("sends at once to a socket that takes one frame per message", () => {
    const out = new FrameBatch();
    const ws = socket();
    out.add(ws, "1", false);
    out.add(ws, "2", false);
    expect(ws.messages).toEqual(["1", "2"]);
  });

  it("keeps the order: a frame sent at once goes after the waiting ones", async () => {
    const out = new FrameBatch();
    const ws = socket();
    out.add(ws, '{"type":"job","id":"a"}', true);
    out.now(ws, '{"type":"cancel","id":"a"}');
    expect(ws.messages).toEqual(['{"type":"job","id":"a"}', '{"type":"cancel","id":"a"}']);
    await turn();
    expect(ws.messages).toHaveLength(2);
  });

  it("keeps each socket's frames apart, and forgets a dropped socket's", async () => {
    const out = new FrameBatch();
    const a = socket();
    const b = socket();
    out.add(a, "a1", true);
    out.add(b, "b1", true);
    out.add(a, "a2", true);
    out.drop(b);
    await turn();
    expect(a.messages).toEqual(["a1\na2"]);
    expect(b.messages).toEqual([]);
  });

  it("never makes a message over the frame bound: a batch that would be goes first", async () => {
    const out = new FrameBatch();
    const ws = socket();
    // Each is 60% of the bound in bytes (3 bytes per character, the worst case): two would be over.
    const big = "€".repeat(Math.floor((MAX_FRAME_BYTES * 0.6) / 3));
    out.add(ws, big, true);
    out.add(ws, big, true);
    out.add(ws, "small", true);
    await turn();
    expect(ws.messages).toEqual([big, `${big}\nsmall`]);
    for (const m of ws.messages) expect(Buffer.byteLength(m)).toBeLessThanOrEqual(MAX_FRAME_BYTES);
  });

  it("a socket that closed before its batch went loses that batch, without throwing", async () => {
    const out = new FrameBatch();
    const ws = socket();
    let closed = true;
    const sink: FrameSink = {
      send: (m) => {
        if (closed) throw new Error("WebSocket is closed");
        ws.send(m);
      },
    };
    out.add(sink, "lost", true);
    await turn();
    closed = false;
    out.add(sink, "next", true);
    await turn();
    expect(ws.messages).toEqual(["next"]);
  });
});
