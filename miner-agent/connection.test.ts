import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { CloseCode, PROTOCOL_VERSION, hotkeyFromSeed, type GatewayFrame } from "../protocol/index.ts";
import { GatewayConnection } from "./connection.ts";

/**
 * The agent's side of the connection, against a WebSocket server that speaks the gateway's side
 * of the handshake and then sends what each test says (the real gateway's batching depends on
 * timing; here the messages are exact).
 */
describe("GatewayConnection", () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  async function connected() {
    const server = new WebSocketServer({ port: 0, host: "127.0.0.1" });
    await new Promise<void>((resolve) => server.once("listening", resolve));
    closers.push(() => new Promise((resolve) => server.close(resolve)));
    const frames: GatewayFrame[] = [];
    let ready!: () => void;
    const readyP = new Promise<void>((resolve) => (ready = resolve));
    const conn = new GatewayConnection({
      gateway: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      hotkey: hotkeyFromSeed(randomBytes(32)),
      gpus: [],
      onReady: () => ready(),
      onFrame: (frame) => void frames.push(frame),
      onLost: () => undefined,
    });
    closers.push(() => conn.stop());
    const socket = new Promise<{ ws: WebSocket; auth: Record<string, unknown> }>((resolve) =>
      server.once("connection", (ws) => {
        ws.once("message", (data) => resolve({ ws, auth: JSON.parse(String(data)) as Record<string, unknown> }));
        ws.send(JSON.stringify({ type: "challenge", v: PROTOCOL_VERSION, nonce: "n", lines: true }));
      }),
    );
    conn.start();
    const { ws, auth } = await socket;
    ws.send(JSON.stringify({ type: "welcome", minerId: "m", sessionId: "s" }));
    await readyP;
    return { ws, auth, frames, conn };
  }

  const cancel = (id: string) => JSON.stringify({ type: "cancel", id });
  const until = async (ok: () => boolean) => {
    for (const end = Date.now() + 5_000; !ok(); ) {
      if (Date.now() > end) throw new Error("timed out");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  };

  it("says in its auth that it takes several frames per message", async () => {
    const { auth } = await connected();
    expect(auth).toMatchObject({ type: "auth", v: PROTOCOL_VERSION, lines: true });
  });

  it("takes each line of a message as a frame, in order", async () => {
    const { ws, frames } = await connected();
    ws.send(`${cancel("a")}\n${cancel("b")}\n${cancel("c")}`);
    ws.send(cancel("d"));
    await until(() => frames.length === 4);
    expect(frames.map((f) => (f.type === "cancel" ? f.id : f.type))).toEqual(["a", "b", "c", "d"]);
  });

  it("closes the connection at a malformed line, and reads no frame after it", async () => {
    const { ws, frames } = await connected();
    const closed = new Promise<number>((resolve) => ws.once("close", resolve));
    ws.send(`${cancel("a")}\n{"type":"cancel"\n${cancel("b")}`);
    expect(await closed).toBe(CloseCode.protocolError);
    expect(frames.map((f) => (f.type === "cancel" ? f.id : f.type))).toEqual(["a"]);
  });
});
