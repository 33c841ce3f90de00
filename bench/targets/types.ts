import type { ChatBody } from "../load/http-client.ts";
import type { Sample } from "../load/runner.ts";
import type { WorkerdProfiler } from "../cpu-profile.ts";

/** Sends one request of each kind to a row (over HTTP, or to an engine in this process). */
export interface LoadClient {
  complete(body: ChatBody): Promise<Sample>;
  stream(body: ChatBody): Promise<Sample>;
  close(): void;
}

/** A row's system under test, started and ready for load. */
export interface RunningTarget {
  /** A client with a pool of `connections` connections (one per concurrent request); no request outlives `timeoutMs`. */
  client(connections: number, timeoutMs: number): LoadClient;
  /**
   * The same, through the same path in front of the paced upstream (the paced phase); absent when
   * the row does not take part in that phase.
   */
  pacedClient?(connections: number, timeoutMs: number): LoadClient;
  /** The gateway's processes, whose memory is the row's "gateway RSS" (none for direct rows). */
  gatewayPids(): number[];
  /** The process hosting the engine (Sluice's agent; the bench itself for the in-process engine), whose CPU is reported apart. */
  agentPids?(): number[];
  /** Profiles the gateway's isolates during a phase (`--cpu-prof`); Sluice rows started with an inspector port only. */
  profiler?: WorkerdProfiler;
  /** Anything worth reporting after the load (e.g. the gateway's first error lines). */
  notes(): string[];
  close(): Promise<void>;
}
