import { choiceCount, type GatewayFrame, type Hotkey } from "../../protocol/index.ts";
import { GatewayConnection } from "../../miner-agent/connection.ts";
import { JobRunner, type ServedInstance } from "../../miner-agent/job-runner.ts";
import type { Pacing } from "./contract.ts";
import { SyntheticEngine } from "./synthetic-engine.ts";

export interface LightAgentOptions {
  gateway: string;
  hotkey: Hotkey;
  /** The chute served, by the name clients call it. */
  chute: string;
  /** Concurrent jobs announced (and enforced). */
  slots: number;
  pacing: Pacing;
  /** An authenticated connection ended (its in-flight jobs are gone with it). */
  onLost: () => void;
  /** A job this agent refused (full, or for an instance it does not serve). */
  onRefused: () => void;
  /** A chunk frame went out (the gateway's per-frame work is most of a stream's cost). */
  onChunk: () => void;
}

/**
 * One simulated miner for the fleet simulator (bench/fleet): a load tool for the bench, not a
 * replacement for the real agent (miner-agent/agent.ts), and never run outside the bench.
 *
 * It is the real agent's wire behaviour with everything heavy left out: the agent's own
 * GatewayConnection (sr25519 challenge answer, heartbeats, reconnects) and JobRunner (chunk
 * coalescing, bounded outbound buffer, cancel), driving a SyntheticEngine instead of a model.
 * One instance of one chute, announced at once; no GPUs, no deploy offers, no status file,
 * no drain. A thousand of them share one Node process.
 */
export class LightAgent {
  private readonly instance: ServedInstance;
  private readonly conn: GatewayConnection;
  private readonly runner: JobRunner;
  private announced = true;

  constructor(private readonly opts: LightAgentOptions) {
    this.instance = {
      chute: opts.chute,
      instanceId: `${opts.hotkey.address}:${opts.chute}`,
      engine: new SyntheticEngine(opts.slots, opts.pacing),
      active: 0,
      requestsServed: 0,
      tokensServed: 0,
    };
    this.runner = new JobRunner(
      (frame) => {
        const sent = this.conn.send(frame);
        if (sent && frame.type === "chunk") opts.onChunk();
        return sent;
      },
      () => this.conn.bufferedAmount,
    );
    this.conn = new GatewayConnection({
      gateway: opts.gateway,
      hotkey: opts.hotkey,
      gpus: [],
      onReady: () => this.announce(),
      onFrame: (frame) => this.onFrame(frame),
      onLost: () => {
        this.runner.abortAll("gateway connection lost");
        opts.onLost();
      },
    });
  }

  get ready(): boolean {
    return this.conn.isReady;
  }

  start(): void {
    this.conn.start();
  }

  stop(): Promise<void> {
    this.runner.abortAll("fleet stopping");
    return this.conn.stop();
  }

  private announce(): void {
    const { instanceId, chute, engine } = this.instance;
    this.conn.send({ type: "capacity", instances: this.announced ? [{ instanceId, chute, maxConcurrency: engine.capacity }] : [] });
  }

  /** As the real agent answers them (miner-agent/agent.ts), for the one instance it serves. */
  private onFrame(frame: Extract<GatewayFrame, { type: "job" | "cancel" | "deploy" | "undeploy" }>): void {
    switch (frame.type) {
      case "cancel":
        return this.runner.cancel(frame.id);
      case "deploy":
        // Never offered: the light agent announces no engines for deploy offers.
        this.conn.send({ type: "deploy_status", offerId: frame.offerId, status: "declined", message: "a fleet-simulator agent takes no deploy offers" });
        return;
      case "undeploy":
        if (frame.instanceId === this.instance.instanceId) {
          this.announced = false;
          this.announce();
        }
        return;
      case "job": {
        const inst = this.instance;
        if (frame.instanceId !== inst.instanceId) {
          this.opts.onRefused();
          this.conn.send({ type: "error", id: frame.id, code: "no_capacity", message: "Instance not served here.", retryable: true });
          return;
        }
        if (inst.active + choiceCount(frame.spec) > inst.engine.capacity || this.runner.has(frame.id)) {
          this.opts.onRefused();
          this.conn.send({ type: "error", id: frame.id, code: "capacity_exceeded", message: "Instance is full.", retryable: true });
          return;
        }
        void this.runner.run(inst, frame.id, frame.spec, frame.traceId);
      }
    }
  }
}
