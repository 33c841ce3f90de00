import { combineLoads, runLoad, type LoadOptions, type LoadResult, type Task } from "./runner.ts";
import { totalCpuMs } from "../proc.ts";

/** One target measured in turns: how to call it, and whose CPU counts. */
export interface TurnTarget {
  label: string;
  /** A task per slice (a fresh connection pool), closed after the slice. */
  connect(): { task: Task; close(): void };
  /** The gateway's processes (workerd). */
  gateway: readonly number[];
  /** The engine host's processes (the agent). */
  engine: readonly number[];
}

export interface TurnRow {
  label: string;
  load: LoadResult;
  gatewayCpuMsPerRequest: number;
  engineCpuMsPerRequest: number;
}

/** The order of turn `turn`: as given on even turns, reversed on odd ones (A B, B A, A B, ...). */
export function turnOrder<T>(turn: number, items: readonly T[]): readonly T[] {
  return turn % 2 === 0 ? items : [...items].reverse();
}

/** One of `turns` equal slices of a bounded load (its time and its request cap). */
export function sliceOf<T extends { durationMs: number; maxRequests: number }>(load: T, turns: number): T {
  return { ...load, durationMs: load.durationMs / turns, maxRequests: Math.ceil(load.maxRequests / turns) };
}

/**
 * Measures targets in turns (A B, B A, ...): `turns` slices each, so a drift in the machine's
 * speed, tens of percent over minutes here, touches every target alike. Each target warms up
 * before its first slice only. CPU is read from /proc around each slice, per request.
 */
export async function measureTurns(targets: readonly TurnTarget[], load: LoadOptions & { warmupMs: number }, turns: number): Promise<TurnRow[]> {
  const acc = targets.map(() => ({ slices: [] as LoadResult[], gatewayMs: 0, engineMs: 0 }));
  const slice: LoadOptions = sliceOf(load, turns);
  for (let turn = 0; turn < turns; turn++) {
    for (const i of turnOrder(turn, targets.map((_, i) => i))) {
      const t = targets[i]!;
      const a = acc[i]!;
      const { task, close } = t.connect();
      try {
        if (turn === 0 && load.warmupMs > 0) await runLoad({ ...slice, durationMs: load.warmupMs }, task);
        const gateway = totalCpuMs(t.gateway);
        const engine = totalCpuMs(t.engine);
        a.slices.push(await runLoad(slice, task));
        a.gatewayMs += totalCpuMs(t.gateway) - gateway;
        a.engineMs += totalCpuMs(t.engine) - engine;
      } finally {
        close();
      }
    }
  }
  return targets.map((t, i) => {
    const { slices, gatewayMs, engineMs } = acc[i]!;
    const combined = combineLoads(slices);
    const n = Math.max(1, combined.requests);
    return { label: t.label, load: combined, gatewayCpuMsPerRequest: gatewayMs / n, engineCpuMsPerRequest: engineMs / n };
  });
}
