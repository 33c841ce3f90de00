import { JobEvent } from "../protocol/index.ts";

/**
 * What a MinerSession hands the Worker for one job: the agent's chunk/done/error frames,
 * already validated, each as its JSON text.
 */
export { JobEvent };

/**
 * Where a MinerSession pushes a job's events after its startJob answer: the Worker's reader,
 * passed to startJob as a function (a stub on the session's side). One call per agent message that carried events of the
 * job (calls on one stub arrive in order). A ReadableStream across the RPC boundary cost about
 * twice as much per event, and to set up, on the time to first token's path.
 */
export type JobEventSink = (
  /** The job's next events (JSON text each), in order. */
  events: string[],
  /** With the job's last events. */
  ended: boolean,
) => void;

/**
 * The answer to `MinerSession.startJob`: the job's first events, and whether more follow (pushed
 * to the job's sink). A short job is answered whole, and its sink is never called.
 */
export interface JobStart {
  /** Each event's JSON text, in order (at least one unless the job was cancelled). */
  events: string[];
  /** Whether more events follow on the sink; false when `events` holds the job's last one. */
  more: boolean;
  /** How long the session held the first event before answering (its time to first token is that much earlier). */
  heldMs: number;
}

/** The message of a job that went silent (before its first event, or mid-job). */
export function silentFor(ms: number): string {
  return `The model produced nothing for ${Math.round(ms / 1000)} s.`;
}
