import type { AgentFrame } from "../protocol/index.ts";
import type { OfferReply } from "./scaler-types.ts";

/** An agent must accept or decline a deploy offer within this time. */
const OFFER_REPLY_TIMEOUT_MS = 10_000;

type DeployStatus = Extract<AgentFrame, { type: "deploy_status" }>;

/**
 * A MinerSession's deploy offers in flight: the scaler's call waits for the agent's accept or
 * decline; an accepted offer is remembered (by its chute) until the agent reports the launch up
 * or failed, which the chute's scaler is then told. In memory: an offer's call keeps the object
 * alive; a launch whose report is lost is reconciled by the scaler (timeout, miner gone).
 */
export class OfferBook {
  private readonly waiting = new Map<string, { chuteId: string; resolve: (reply: OfferReply) => void }>();
  private readonly launching = new Map<string, string>();

  /** Register an offer before sending it; resolves with the agent's answer or "unavailable" after the timeout. */
  wait(offerId: string, chuteId: string): Promise<OfferReply> {
    return new Promise<OfferReply>((resolve) => {
      this.waiting.set(offerId, { chuteId, resolve });
      setTimeout(() => {
        if (this.waiting.delete(offerId)) resolve({ status: "unavailable", message: "The miner did not answer the offer." });
      }, OFFER_REPLY_TIMEOUT_MS);
    });
  }

  /** The agent's report on an offer; a launch that ended (up or failed) names the chute whose scaler must hear it. */
  report(frame: DeployStatus): { chuteId: string; ready: boolean; message: string } | null {
    const pending = this.waiting.get(frame.offerId);
    if (pending && (frame.status === "accepted" || frame.status === "declined")) {
      this.waiting.delete(frame.offerId);
      if (frame.status === "accepted") this.launching.set(frame.offerId, pending.chuteId);
      pending.resolve(
        frame.status === "accepted" ? { status: "accepted", instanceId: frame.instanceId ?? "" } : { status: "declined", message: frame.message ?? "" },
      );
      return null;
    }
    const chuteId = this.launching.get(frame.offerId);
    if (!chuteId || (frame.status !== "ready" && frame.status !== "failed")) return null;
    this.launching.delete(frame.offerId);
    return { chuteId, ready: frame.status === "ready", message: frame.message ?? "" };
  }
}
