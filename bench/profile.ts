/** One load phase: a closed loop at fixed concurrency, bounded by time and count, after a warm-up. */
export interface Phase {
  concurrency: number;
  durationMs: number;
  maxRequests: number;
  /** Unrecorded load first (connections, JIT, caches), bounded the same way. */
  warmupMs: number;
  maxTokens: number;
  /** Streams' starts spread over this long at the start of each load, not recorded (see LoadOptions.rampMs). */
  rampMs?: number;
}

/** The fleet simulator's run (bench/fleet): agents connected, left idle, then streams through all of them. */
export interface FleetPhase {
  agents: number;
  /** Streaming requests, all open at the same time at some point, after the idle reading. */
  streams: number;
  /**
   * Streams opened per second (0: all in one burst). The gateway admits ~150-200 requests/s on
   * this machine, so in a burst of 2,000 the TTFT measures the queue to get in (~12 s for the
   * last ones) rather than the gateway carrying the streams.
   */
  openPerSec: number;
  /** Concurrent jobs each agent announces (also the chute's concurrency per instance). */
  slotsPerAgent: number;
  maxTokens: number;
  /** Each stream produces one token per this long ... */
  tokenIntervalMs: number;
  /** ... handed to the agent in bursts this often, each sent as one chunk frame. */
  frameMs: number;
  /** Agents between socket open and welcome at once. */
  connectConcurrency: number;
  connectTimeoutMs: number;
  /** How long the connected agents sit idle, read every second (their Durable Objects are evicted after 10-20 s). */
  idleMs: number;
  /** No stream may take longer. */
  streamTimeoutMs: number;
}

export interface Profile {
  name: "default" | "quick" | "smoke";
  /** Small non-streaming requests on the synthetic rows. */
  small: Phase;
  /** 256-token streams on the synthetic rows. */
  stream: Phase;
  /** The same streams one at a time on the synthetic rows: the path's own time to first token, without queueing. */
  lone: Phase;
  /**
   * The same streams from the paced upstream (PACED_TOKEN_MS per token, as an engine decodes), on
   * the direct, nginx and Sluice rows: the path's added first-token latency with many streams in
   * flight, the CPU not saturated (issue 7's TTFT target).
   */
  paced: Phase;
  /** The same two on the llama.cpp rows (concurrency = the engine's parallel sequences). */
  llamaSmall: Phase;
  llamaStream: Phase;
  /**
   * Unrecorded load on the upstream called directly before the first row (each kind this long),
   * so the first row does not pay for the load generator's and the upstream's JIT warm-up.
   */
  globalWarmupMs: number;
  /** No single request may take longer. */
  requestTimeoutMs: number;
  fleet: FleetPhase;
}

/** The paced upstream writes a stream's tokens this far apart: 256 tokens in about 1 s (~250 tokens/s, a fast GPU engine). */
export const PACED_TOKEN_MS = 4;

/** llama.cpp parallel sequences, for both the agent and the in-process engine. */
export const LLAMA_PARALLEL = 4;

/**
 * Slices per row of each phase, for the rows measured in turns (bench.ts, measureInTurns): the
 * synthetic rows, and the two llama.cpp rows (with two rows, two slices each left a swing of the
 * machine within a phase to one row's slices, and their verdict flipped between runs with it).
 */
export const TURNS = { synthetic: 2, llama: 4 } as const;

const DEFAULT: Profile = {
  name: "default",
  small: { concurrency: 16, durationMs: 8_000, maxRequests: 200_000, warmupMs: 2_000, maxTokens: 4 },
  stream: { concurrency: 20, durationMs: 8_000, maxRequests: 50_000, warmupMs: 2_000, maxTokens: 256 },
  lone: { concurrency: 1, durationMs: 3_000, maxRequests: 5_000, warmupMs: 500, maxTokens: 256 },
  // Started all at once, equal streams of a closed loop stay in lockstep and arrive in bursts of
  // 20 (each TTFT then holds the admission of the rest of its burst): spread over one stream's length.
  paced: { concurrency: 20, durationMs: 8_000, maxRequests: 50_000, warmupMs: 2_000, maxTokens: 256, rampMs: 1_000 },
  llamaSmall: { concurrency: LLAMA_PARALLEL, durationMs: 5_000, maxRequests: 5_000, warmupMs: 1_000, maxTokens: 8 },
  llamaStream: { concurrency: LLAMA_PARALLEL, durationMs: 12_000, maxRequests: 1_000, warmupMs: 1_000, maxTokens: 256 },
  globalWarmupMs: 3_000,
  requestTimeoutMs: 30_000,
  // 2,000 streams x one frame a second keeps the gateway's one workerd thread about 70% busy
  // here. Twice that (25 ms tokens, 500 ms frames) opened in one burst kept it busy so long that
  // heartbeats went unanswered for 30 s and both ends dropped live agents mid-stream.
  fleet: {
    agents: 1_000,
    streams: 2_000,
    openPerSec: 100,
    slotsPerAgent: 4,
    maxTokens: 800,
    tokenIntervalMs: 50,
    frameMs: 1_000,
    connectConcurrency: 32,
    connectTimeoutMs: 120_000,
    idleMs: 40_000,
    streamTimeoutMs: 120_000,
  },
};

const QUICK: Profile = {
  name: "quick",
  small: { ...DEFAULT.small, durationMs: 1_500, warmupMs: 300 },
  stream: { ...DEFAULT.stream, durationMs: 1_500, warmupMs: 300 },
  lone: { ...DEFAULT.lone, durationMs: 800, warmupMs: 200 },
  // A paced stream lasts about 1 s: after its ramp, each row's slice still starts one or two streams per connection.
  paced: { ...DEFAULT.paced, durationMs: 3_000, warmupMs: 1_000 },
  llamaSmall: { ...DEFAULT.llamaSmall, durationMs: 1_000, warmupMs: 200 },
  llamaStream: { ...DEFAULT.llamaStream, durationMs: 1_500, warmupMs: 300 },
  globalWarmupMs: 1_000,
  requestTimeoutMs: 15_000,
  fleet: { ...DEFAULT.fleet, agents: 100, streams: 200, openPerSec: 0, maxTokens: 100, idleMs: 30_000, connectTimeoutMs: 30_000, streamTimeoutMs: 60_000 },
};

/** For the test suite: proves every row still runs end to end, measures nothing worth reading. */
const SMOKE: Profile = {
  name: "smoke",
  small: { concurrency: 4, durationMs: 300, maxRequests: 20, warmupMs: 0, maxTokens: 4 },
  stream: { concurrency: 4, durationMs: 300, maxRequests: 8, warmupMs: 0, maxTokens: 256 },
  lone: { concurrency: 1, durationMs: 200, maxRequests: 4, warmupMs: 0, maxTokens: 32 },
  paced: { concurrency: 4, durationMs: 600, maxRequests: 16, warmupMs: 0, maxTokens: 32, rampMs: 40 },
  llamaSmall: { concurrency: LLAMA_PARALLEL, durationMs: 300, maxRequests: 4, warmupMs: 0, maxTokens: 8 },
  llamaStream: { concurrency: LLAMA_PARALLEL, durationMs: 300, maxRequests: 4, warmupMs: 0, maxTokens: 32 },
  globalWarmupMs: 0,
  requestTimeoutMs: 15_000,
  fleet: { ...DEFAULT.fleet, agents: 4, streams: 8, openPerSec: 0, maxTokens: 8, tokenIntervalMs: 20, frameMs: 40, idleMs: 200, connectTimeoutMs: 20_000, streamTimeoutMs: 15_000 },
};

export const PROFILES = { default: DEFAULT, quick: QUICK, smoke: SMOKE } as const;
