/**
 * The autoscaling policy, as a pure function of recent load: how many instances a chute
 * should have. Hysteresis keeps it from thrashing: it scales up on high utilization or on
 * refused requests over the short window, but down only when both windows are quiet, refused
 * nothing, and no scale event happened within the cool-down; and down one instance at a time.
 */

export interface LoadSample {
  /** When it was taken (ms). */
  t: number;
  /** Requests in flight and the total capacity (max concurrent requests) of the chute's instances. */
  inflight: number;
  capacity: number;
  instances: number;
  /** Requests asked of the router since the previous sample, and those refused for lack of capacity. */
  requests: number;
  refused: number;
}

export interface PolicyConfig {
  shortWindowMs: number;
  longWindowMs: number;
  /** Quiet time after any scale event before scaling down. */
  cooldownMs: number;
  /** Utilization to size for when scaling up. */
  targetUtilization: number;
  /** Scale up above this short-window utilization... */
  upUtilization: number;
  /** ...or when more than this share of requests was refused. */
  upRefusedShare: number;
  /** Scale down only below this utilization, in both windows. */
  downUtilization: number;
}

export const DEFAULT_POLICY: Omit<PolicyConfig, "shortWindowMs" | "longWindowMs" | "cooldownMs"> = {
  targetUtilization: 0.6,
  upUtilization: 0.8,
  upRefusedShare: 0.01,
  downUtilization: 0.3,
};

export interface PolicyInput {
  now: number;
  samples: readonly LoadSample[];
  /** Instances serving now, and launches accepted but not up yet. */
  current: number;
  pending: number;
  min: number;
  max: number;
  /** Capacity of one instance (the chute's concurrency), for sizing. */
  perInstance: number;
  lastScaleAt: number | null;
}

export interface WindowStats {
  utilization: number | null;
  inflight: number;
  requests: number;
  refused: number;
  refusedShare: number;
  /** Time the window's samples cover. */
  coveredMs: number;
}

export interface Decision {
  target: number;
  reason: string;
  short: WindowStats;
  long: WindowStats;
}

export function windowStats(samples: readonly LoadSample[], now: number, windowMs: number): WindowStats {
  const inWindow = samples.filter((s) => s.t > now - windowMs);
  let inflight = 0;
  let capacity = 0;
  let requests = 0;
  let refused = 0;
  for (const s of inWindow) {
    inflight += s.inflight;
    capacity += s.capacity;
    requests += s.requests;
    refused += s.refused;
  }
  const n = inWindow.length;
  return {
    utilization: capacity > 0 ? inflight / capacity : null,
    inflight: n > 0 ? inflight / n : 0,
    requests,
    refused,
    refusedShare: requests > 0 ? refused / requests : 0,
    coveredMs: n > 0 ? now - inWindow[0]!.t : 0,
  };
}

export function decide(input: PolicyInput, cfg: PolicyConfig): Decision {
  const short = windowStats(input.samples, input.now, cfg.shortWindowMs);
  const long = windowStats(input.samples, input.now, cfg.longWindowMs);
  const clamp = (n: number) => Math.max(input.min, Math.min(input.max, n));
  const have = input.current + input.pending;
  const per = Math.max(1, input.perInstance);
  const result = (target: number, reason: string): Decision => ({ target: clamp(target), reason, short, long });

  if (have < input.min) return result(input.min, `below the minimum of ${input.min}`);
  if (have > input.max) return result(input.max, `above the maximum of ${input.max}`);

  // Demand with nothing to serve it: start one (scale from zero).
  if (input.current === 0 && input.pending === 0 && short.requests > 0) {
    return result(Math.max(1, Math.ceil(short.inflight / (per * cfg.targetUtilization))), "requests arrived with no instance");
  }
  // Evidence for scaling up counts only while the chute had its current instance count: what
  // was refused before the last instance came up says nothing about the capacity now.
  const now = windowStats(input.samples.filter((x) => x.instances === input.current), input.now, cfg.shortWindowMs);
  const hot = now.utilization !== null && now.utilization > cfg.upUtilization;
  const refusing = now.refusedShare > cfg.upRefusedShare;
  if (hot || refusing) {
    // Size for the observed load at the target utilization; refusals mean the real load is
    // higher than in-flight shows, so add at least one more. While a launch is pending its
    // capacity is already counted: only a larger sized need adds more.
    const sized = Math.ceil(now.inflight / (per * cfg.targetUtilization));
    const target = Math.max(have + (input.pending > 0 ? 0 : 1), sized);
    return result(target, refusing ? `refused ${(now.refusedShare * 100).toFixed(1)}% of requests` : `short-window utilization ${(now.utilization! * 100).toFixed(0)}%`);
  }

  const quiet =
    long.coveredMs >= cfg.longWindowMs * 0.9 &&
    long.refused === 0 &&
    (long.utilization ?? 0) < cfg.downUtilization &&
    (short.utilization ?? 0) < cfg.downUtilization &&
    input.pending === 0 &&
    (input.lastScaleAt === null || input.now - input.lastScaleAt >= cfg.cooldownMs);
  if (quiet && input.current > input.min) {
    // One at a time, never below what the long window's load needs at the target utilization.
    const needed = Math.ceil(long.inflight / (per * cfg.targetUtilization));
    if (needed < input.current) return result(input.current - 1, `utilization ${((long.utilization ?? 0) * 100).toFixed(0)}% over the long window`);
  }
  return result(have, "steady");
}
