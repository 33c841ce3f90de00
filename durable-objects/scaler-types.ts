/** The ChuteScaler's and deploy offers' RPC shapes (no runtime imports, so Node code can use them too). */

/** A MinerSession's answer to a deploy offer. */
export type OfferReply =
  | { status: "accepted"; instanceId: string }
  | { status: "declined" | "unavailable"; message: string };

/** What the scaler reports about its chute (GET /v1/chutes/:id). */
export interface ScalerState {
  /** The instance count the scaler is steering to, and why. */
  target: number;
  reason: string;
  /** Offers accepted whose instance has not come up yet. */
  pending: { offerId: string; minerId: string; instanceId: string; since: number }[];
  /** In-flight / capacity, averaged over the short and long windows (null without samples). */
  utilization: { short: number | null; long: number | null };
  /** Share of requests refused for lack of capacity over the short window. */
  refusedShare: number;
  lastScaleUpAt: number | null;
  lastScaleDownAt: number | null;
}
