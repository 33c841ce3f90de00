import { z } from "zod";

/**
 * What the bench and the fleet process (fleet-process.ts) tell each other: the bench writes a
 * config file and reads a report file, both parsed here on the receiving side; the fleet's
 * stdout carries only its `FLEET_FIRST`, `FLEET_READY` or `FLEET_FAILED` lines, and SIGUSR2
 * tells it to connect the rest of its agents after the first.
 */

export const Pacing = z.object({
  /** A stream produces one token per this long. */
  tokenIntervalMs: z.number().positive(),
  /** The synthetic engine hands over what it produced this often (the agent sends it as one frame). */
  frameMs: z.number().positive(),
});
export type Pacing = z.infer<typeof Pacing>;

export const FleetConfig = z.object({
  gateway: z.url(),
  /** The chute every agent serves, by the name clients call it. */
  chute: z.string().min(1),
  /** Concurrent jobs each agent announces. */
  slots: z.int().positive(),
  pacing: Pacing,
  /** Agents connecting (socket open, not yet welcomed) at once. */
  connectConcurrency: z.int().positive(),
  /** Every agent must be welcomed within this long, or the fleet reports failure. */
  connectTimeoutMs: z.int().positive(),
  /** Each agent's hotkey (32-byte secret seed, hex), registered with the gateway. */
  miners: z.array(z.object({ name: z.string(), secretSeed: z.string().regex(/^[0-9a-f]{64}$/) })).min(1),
  /** Where the fleet writes its FleetReport when it is told to stop. */
  reportPath: z.string().min(1),
});
export type FleetConfig = z.infer<typeof FleetConfig>;

/** A warning or error the agents logged (their own structured events), counted by kind. */
export const Problem = z.object({ level: z.string(), event: z.string(), detail: z.string(), count: z.int() });
export type Problem = z.infer<typeof Problem>;

export const ReadyLine = z.object({
  /** Agents welcomed by the gateway (authenticated) and holding an open socket. */
  ready: z.int(),
  agents: z.int(),
  /** From the step's first connect to its last welcome (or to the timeout). */
  connectMs: z.number(),
});
export type ReadyLine = z.infer<typeof ReadyLine>;

export const FleetReport = z.object({
  agents: z.int(),
  /** Agents connected and welcomed when the fleet was told to stop. */
  ready: z.int(),
  /** Welcomes received: more than `agents` means some agent lost its socket and reconnected. */
  welcomes: z.int(),
  /** Connections that ended while authenticated, before the fleet was told to stop. */
  lost: z.int(),
  jobs: z.object({ ok: z.int(), cancelled: z.int(), error: z.int() }),
  /** Jobs an agent refused (instance full, or not served): the gateway routed past a slot. */
  refused: z.int(),
  /** Chunk frames the agents sent. */
  chunkFrames: z.int(),
  /** Completion tokens of the jobs that ended ok (the agents' own `job.end` events). */
  tokens: z.int(),
  /** Warnings and errors the agents logged before the stop, most frequent first. */
  problems: z.array(Problem),
  /** The fleet process's peak resident memory. */
  peakRssBytes: z.int(),
});
export type FleetReport = z.infer<typeof FleetReport>;

export const FIRST_MARK = "FLEET_FIRST";
export const READY_MARK = "FLEET_READY";
export const FAILED_MARK = "FLEET_FAILED";
