/** The ChuteRouter's RPC shapes (no runtime imports, so Node code can use them too). */

export interface RouterInstance {
  instanceId: string;
  minerId: string;
  maxConcurrency: number;
  /** Launched on a deploy offer (the scaler may undeploy it). */
  managed: boolean;
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  samples: number;
}

export interface AcquireRequest {
  /** The chute's id (the router's name), so a refusal can wake the chute's scaler. */
  chute?: string;
  /** Instances not to use (they already failed this request). */
  avoid: string[];
  /** How long to wait for a free slot when all are busy. */
  waitMs: number;
  /** Slots the request takes on one instance (a request with several choices takes one each); default 1. */
  weight?: number;
  /**
   * Hashes of the request's leading parts (shortest first): an instance that recently served a
   * request with the same prefix likely holds it in its KV cache.
   */
  prefixes?: string[];
  /** Leases this isolate gave back since its last call, applied before this acquire. */
  released?: LeaseRelease[];
}

export interface LeaseRelease {
  leaseId: string;
  report?: LeaseReport;
  /**
   * The isolate handed the slot straight to its next request for the chute (which holds the
   * lease now, and releases it in turn): the router counts that request and notes its prefixes,
   * the slot stays taken. `instanceId` is the lease's: the request counts for it even when the
   * lease's own release overtook this note (two calls in flight from one isolate).
   */
  handedOver?: { prefixes: string[]; instanceId?: string };
}

/** The router's word, with each answer, on handing slots over in an isolate (see worker/inference/releases.ts). */
export interface HandoverAnswer {
  /** Nobody was waiting and slots were still free: an isolate may hand a finished request's slot to its next request without asking. */
  roomy: boolean;
  /** Except slots on these instances: they lag behind the others (see HealthBook), so the router routes their requests. */
  lagging?: string[];
}

export type AcquireResult =
  | ({
      ok: true;
      leaseId: string;
      instanceId: string;
      minerId: string;
      affinity: boolean;
    } & Partial<HandoverAnswer>)
  | { ok: false; code: "no_capacity" | "capacity_exceeded" };

/** How a lease ended, for the instance's health score. */
export interface LeaseReport {
  /** ok: served; failed: the instance failed the request; neutral: e.g. the client left. */
  result: "ok" | "failed" | "neutral";
  ttftMs?: number | null;
  /** Completion tokens and the time from first token to end, for tokens/s. */
  tokens?: number;
  streamMs?: number;
}

export interface InstanceHealth {
  ttftMs: number | null;
  tokensPerSecond: number | null;
  errorRate: number;
  consecutiveFailures: number;
  disabledUntil: number | null;
  served: number;
}

export interface RouterSnapshot {
  instances: (RouterInstance & { inflight: number; health: InstanceHealth })[];
  waiting: number;
  affinityHits: number;
  /** Slots isolates handed from a finished request to their next one without an acquire (monotonic). */
  handovers: number;
  stats: {
    /**
     * Requests routed since the router started (acquires, and slots an isolate handed from one
     * request to its next), and those refused for lack of capacity (monotonic).
     */
    requests: number;
    refused: number;
    /** Over the most recent served requests. */
    ttftMs: Percentiles | null;
    tokensPerSecond: Percentiles | null;
  };
}
