import type { Percentiles, RouterSnapshot } from "../../durable-objects/router-types.ts";
import type { ScalerState } from "../../durable-objects/scaler-types.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { usdPerToken } from "./pricing.ts";

/**
 * The chute object of `/v1/chutes`: what its owner configured, in the units the API takes
 * (prices USD per token as exact decimal strings, GPU memory MiB, times unix seconds), and on
 * `GET /v1/chutes/{id}` what is live now (instances, utilization, latency percentiles, scaler).
 */

const seconds = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : Math.floor(ms / 1000));

/** Allowed GPU types, stored as a JSON array; anything else reads as "any". */
export function parseGpuTypes(raw: string): string[] {
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : [];
  } catch {
    return [];
  }
}

export function chuteObject(chute: ChuteRecord) {
  return {
    id: chute.id,
    object: "chute" as const,
    name: chute.name,
    owned_by: chute.ownerAccountId,
    model_ref: chute.modelRef,
    engine: chute.engine,
    gpu: { count: chute.gpuCount, min_vram_mb: chute.minVramMb, types: parseGpuTypes(chute.gpuTypes) },
    context_length: chute.contextLength,
    max_output_tokens: chute.maxOutputTokens,
    pricing: {
      prompt: usdPerToken(chute.promptPriceNanoPerM),
      completion: usdPerToken(chute.completionPriceNanoPerM),
      // null: cached prompt tokens pay the prompt price (what /v1/models then lists).
      input_cache_read: chute.cachedPromptPriceNanoPerM === null ? null : usdPerToken(chute.cachedPromptPriceNanoPerM),
    },
    concurrency: chute.concurrency,
    min_instances: chute.minInstances,
    max_instances: chute.maxInstances,
    public: chute.public,
    display_name: chute.displayName,
    description: chute.description,
    hugging_face_id: chute.huggingFaceId,
    quantization: chute.quantization,
    deprecation_date: chute.deprecationDate,
    created: seconds(chute.createdAt),
    updated: seconds(chute.updatedAt),
  };
}

const round = (n: number, places = 3) => Math.round(n * 10 ** places) / 10 ** places;

function percentiles(p: Percentiles | null | undefined) {
  return p ? { p50: round(p.p50, 1), p90: round(p.p90, 1), p99: round(p.p99, 1), samples: p.samples } : null;
}

/**
 * Live fields from the chute's router and scaler; either may be null when its Durable Object
 * did not answer (the fields then read as empty or null rather than failing the request).
 */
export function liveFields(snap: RouterSnapshot | null, scaler: ScalerState | null) {
  const instances = snap?.instances ?? [];
  const capacity = instances.reduce((n, i) => n + i.maxConcurrency, 0);
  const inflight = instances.reduce((n, i) => n + i.inflight, 0);
  return {
    instances: instances.map((i) => ({
      id: i.instanceId,
      miner_id: i.minerId,
      inflight: i.inflight,
      capacity: i.maxConcurrency,
      /** Started by the scaler through a deploy offer (rather than configured by the miner). */
      managed: i.managed,
      health: {
        ttft_ms: i.health.ttftMs === null ? null : round(i.health.ttftMs, 1),
        tokens_per_second: i.health.tokensPerSecond === null ? null : round(i.health.tokensPerSecond, 1),
        error_rate: round(i.health.errorRate),
        consecutive_failures: i.health.consecutiveFailures,
        disabled_until: seconds(i.health.disabledUntil),
        served: i.health.served,
      },
    })),
    utilization: {
      inflight,
      capacity,
      waiting: snap?.waiting ?? 0,
      /** In-flight / capacity now; the scaler's averages over its short and long windows. */
      now: capacity > 0 ? round(inflight / capacity) : null,
      short: scaler?.utilization.short ?? null,
      long: scaler?.utilization.long ?? null,
    },
    stats: {
      requests: snap?.stats.requests ?? 0,
      refused: snap?.stats.refused ?? 0,
      ttft_ms: percentiles(snap?.stats.ttftMs),
      tokens_per_second: percentiles(snap?.stats.tokensPerSecond),
    },
    scaler: scaler
      ? {
          target: scaler.target,
          reason: scaler.reason,
          pending: scaler.pending.map((p) => ({ offer_id: p.offerId, miner_id: p.minerId, instance_id: p.instanceId, since: seconds(p.since) })),
          refused_share: round(scaler.refusedShare),
          last_scale_up_at: seconds(scaler.lastScaleUpAt),
          last_scale_down_at: seconds(scaler.lastScaleDownAt),
        }
      : null,
  };
}
