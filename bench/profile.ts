/** One load phase: a closed loop at fixed concurrency, bounded by time and count, after a warm-up. */
export interface Phase {
  concurrency: number;
  durationMs: number;
  maxRequests: number;
  /** Unrecorded load first (connections, JIT, caches), bounded the same way. */
  warmupMs: number;
  maxTokens: number;
}

export interface Profile {
  name: "default" | "quick" | "smoke";
  /** Small non-streaming requests on the synthetic rows. */
  small: Phase;
  /** 256-token streams on the synthetic rows. */
  stream: Phase;
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
}

/** llama.cpp parallel sequences, for both the agent and the in-process engine. */
export const LLAMA_PARALLEL = 4;

const DEFAULT: Profile = {
  name: "default",
  small: { concurrency: 16, durationMs: 8_000, maxRequests: 200_000, warmupMs: 2_000, maxTokens: 4 },
  stream: { concurrency: 20, durationMs: 8_000, maxRequests: 50_000, warmupMs: 2_000, maxTokens: 256 },
  llamaSmall: { concurrency: LLAMA_PARALLEL, durationMs: 5_000, maxRequests: 5_000, warmupMs: 1_000, maxTokens: 8 },
  llamaStream: { concurrency: LLAMA_PARALLEL, durationMs: 8_000, maxRequests: 1_000, warmupMs: 1_000, maxTokens: 256 },
  globalWarmupMs: 3_000,
  requestTimeoutMs: 30_000,
};

const QUICK: Profile = {
  name: "quick",
  small: { ...DEFAULT.small, durationMs: 1_500, warmupMs: 300 },
  stream: { ...DEFAULT.stream, durationMs: 1_500, warmupMs: 300 },
  llamaSmall: { ...DEFAULT.llamaSmall, durationMs: 1_000, warmupMs: 200 },
  llamaStream: { ...DEFAULT.llamaStream, durationMs: 1_500, warmupMs: 300 },
  globalWarmupMs: 1_000,
  requestTimeoutMs: 15_000,
};

/** For the test suite: proves every row still runs end to end, measures nothing worth reading. */
const SMOKE: Profile = {
  name: "smoke",
  small: { concurrency: 4, durationMs: 300, maxRequests: 20, warmupMs: 0, maxTokens: 4 },
  stream: { concurrency: 4, durationMs: 300, maxRequests: 8, warmupMs: 0, maxTokens: 256 },
  llamaSmall: { concurrency: LLAMA_PARALLEL, durationMs: 300, maxRequests: 4, warmupMs: 0, maxTokens: 8 },
  llamaStream: { concurrency: LLAMA_PARALLEL, durationMs: 300, maxRequests: 4, warmupMs: 0, maxTokens: 32 },
  globalWarmupMs: 0,
  requestTimeoutMs: 15_000,
};

export const PROFILES = { default: DEFAULT, quick: QUICK, smoke: SMOKE } as const;
