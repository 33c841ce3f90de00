/**
 * Test double of a broken miner agent: it speaks the protocol correctly up to the first job,
 * then answers it with a malformed frame (the gateway must close its session and re-route the
 * job). Real agents never do this, so a raw WebSocket client stands in for one. With `lines`, the
 * malformed frame follows a valid one in the same message (frames sent together, one per line).
 */
import WebSocket from "ws";
import type { SeedMiner } from "../../scripts/lib/seed.ts";
import { authFrame } from "./hotkeys.ts";

export interface BrokenAgent {
  /** Resolves when the gateway has closed the connection. */
  closed: Promise<number>;
  jobsReceived: number;
  close(): void;
}

export function startBrokenAgent(opts: { gateway: string; miner: SeedMiner; chute: string; lines?: boolean }): Promise<BrokenAgent> {
  const ws = new WebSocket(`${opts.gateway.replace(/^http/, "ws")}/v1/miners/connect?miner=${encodeURIComponent(opts.miner.id)}`);
  const agent: BrokenAgent = {
    closed: new Promise((resolve) => ws.once("close", (code) => resolve(code))),
    jobsReceived: 0,
    close: () => ws.terminate(),
  };
  return new Promise((resolve, reject) => {
    ws.once("error", reject);
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; nonce?: string };
      if (frame.type === "challenge") {
        ws.send(authFrame(opts.miner, frame.nonce ?? ""));
      } else if (frame.type === "welcome") {
        ws.send(JSON.stringify({ type: "capacity", instances: [{ instanceId: `${opts.miner.id}:broken`, chute: opts.chute, maxConcurrency: 4 }] }));
        resolve(agent);
      } else if (frame.type === "job") {
        agent.jobsReceived++;
        const truncated = '{"type":"chunk","id":';
        ws.send(opts.lines ? `${JSON.stringify({ type: "pong", t: 0 })}\n${truncated}` : truncated);
      }
    });
  });
}
