import type { InstanceHealth, LeaseReport, Percentiles } from "./router-types.ts";

/** Weight of the newest sample in the health averages. */
const EWMA_ALPHA = 0.3;
/** Consecutive failures after which an instance is taken out of rotation, with backoff. */
const DISABLE_AFTER_FAILURES = 3;
const DISABLE_MIN_MS = 1_000;
const DISABLE_MAX_MS = 60_000;
/** Latency samples kept for percentiles. */
const MAX_SAMPLES = 512;
/**
 * An instance whose load weighs this much heavier than a healthy one's (slower than the fastest,
 * or failing) lags: its slots are not handed from request to request in an isolate, so the router
 * routes those requests and traffic shifts away from it.
 */
const LAGGING_FACTOR = 1.5;
/** Which instances lag is worked out again at most this often (O(instances) each time), as health changes. */
const LAGGING_EVERY_MS = 100;

/**
 * The health of a chute's instances as its router sees it, from the reports of finished requests
 * (latency and speed averages, error rate, failures with backoff), and what it makes each
 * instance's load weigh. The router keeps entries for the instances it knows only.
 */
export class HealthBook {
  private readonly byInstance = new Map<string, InstanceHealth>();
  private readonly ttftSamples = new Ring(MAX_SAMPLES);
  private readonly tpsSamples = new Ring(MAX_SAMPLES);
  /** The instances that lag, as of `laggingAt`; stale once health changed. */
  private laggingList: string[] = [];
  private laggingAt = 0;
  private laggingStale = false;

  get(instanceId: string): InstanceHealth | undefined {
    return this.byInstance.get(instanceId);
  }

  /** The instance's health, a fresh one if nothing is known yet. */
  of(instanceId: string): InstanceHealth {
    let h = this.byInstance.get(instanceId);
    if (!h) {
      h = { ttftMs: null, tokensPerSecond: null, errorRate: 0, consecutiveFailures: 0, disabledUntil: null, served: 0 };
      this.byInstance.set(instanceId, h);
    }
    return h;
  }

  forget(instanceId: string): void {
    this.byInstance.delete(instanceId);
    this.laggingStale = true;
  }

  /** Fold a finished request into the instance's health: latency and speed averages, failures with backoff. */
  observe(instanceId: string, r: LeaseReport): void {
    if (r.result === "neutral") return;
    this.laggingStale = true;
    const h = this.of(instanceId);
    const ewma = (prev: number | null, x: number) => (prev === null ? x : prev + EWMA_ALPHA * (x - prev));
    h.errorRate = ewma(h.errorRate, r.result === "failed" ? 1 : 0);
    if (r.result === "failed") {
      h.consecutiveFailures++;
      if (h.consecutiveFailures >= DISABLE_AFTER_FAILURES) {
        const backoff = Math.min(DISABLE_MAX_MS, DISABLE_MIN_MS * 2 ** (h.consecutiveFailures - DISABLE_AFTER_FAILURES));
        h.disabledUntil = Date.now() + backoff;
      }
      return;
    }
    h.consecutiveFailures = 0;
    h.disabledUntil = null;
    h.served++;
    if (r.ttftMs != null) {
      h.ttftMs = ewma(h.ttftMs, r.ttftMs);
      this.ttftSamples.push(r.ttftMs);
    }
    if (r.tokens && r.streamMs && r.tokens > 1 && r.streamMs > 0) {
      const tps = (r.tokens * 1000) / r.streamMs;
      h.tokensPerSecond = ewma(h.tokensPerSecond, tps);
      this.tpsSamples.push(tps);
    }
  }

  /** The best tokens/s among the instances (0 while none is known). */
  fastest(): number {
    let fastest = 0;
    for (const h of this.byInstance.values()) fastest = Math.max(fastest, h.tokensPerSecond ?? 0);
    return fastest;
  }

  /** The instances that lag (see LAGGING_FACTOR), worked out again at most every LAGGING_EVERY_MS. */
  lagging(): string[] {
    const now = Date.now();
    if (this.laggingStale && now - this.laggingAt >= LAGGING_EVERY_MS) {
      const fastest = this.fastest();
      this.laggingList = [];
      for (const [id, h] of this.byInstance) if (healthFactor(h, fastest) > LAGGING_FACTOR) this.laggingList.push(id);
      this.laggingAt = now;
      this.laggingStale = false;
    }
    return this.laggingList;
  }

  stats(): { ttftMs: Percentiles | null; tokensPerSecond: Percentiles | null } {
    return { ttftMs: this.ttftSamples.percentiles(), tokensPerSecond: this.tpsSamples.percentiles() };
  }
}

/**
 * How much heavier an instance's load weighs for its health (`fastest`: HealthBook.fastest()):
 * recent errors, and slowness relative to the fastest instance (at most 4x).
 */
export function healthFactor(h: InstanceHealth | undefined, fastest: number): number {
  const speed = h?.tokensPerSecond && fastest > 0 ? Math.min(4, fastest / h.tokensPerSecond) : 1;
  return (1 + 4 * (h?.errorRate ?? 0)) * speed;
}

/** The most recent `size` values, for percentiles. */
class Ring {
  private readonly values: number[] = [];
  private next = 0;

  constructor(private readonly size: number) {}

  push(v: number): void {
    if (this.values.length < this.size) this.values.push(v);
    else this.values[this.next] = v;
    this.next = (this.next + 1) % this.size;
  }

  percentiles(): Percentiles | null {
    if (this.values.length === 0) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), samples: sorted.length };
  }
}
