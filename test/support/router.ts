import type { AcquireRequest, AcquireResult, HandoverAnswer, LeaseRelease, RouterSnapshot } from "../../durable-objects/router-types.ts";
import type { Gateway } from "./gateway.ts";

export type Snapshot = RouterSnapshot;

/** The chute router's RPC methods, called on the real Durable Object through Miniflare. */
export interface RouterClient {
  register(minerId: string, instances: { instanceId: string; maxConcurrency: number }[], chuteId: string): Promise<void>;
  acquire(req: AcquireRequest): Promise<AcquireResult>;
  releaseMany(released: LeaseRelease[]): Promise<HandoverAnswer>;
  snapshot(): Promise<Snapshot>;
}

export async function routerOf(gw: Gateway, chuteId: string): Promise<RouterClient> {
  const ns = await gw.mf.getDurableObjectNamespace("CHUTE_ROUTER");
  // Miniflare proxies RPC to the Durable Object; its types only describe fetch().
  return ns.get(ns.idFromName(chuteId)) as unknown as RouterClient;
}

/** The chute router's view, read through Miniflare's RPC proxy to the Durable Object. */
export async function routerSnapshot(gw: Gateway, chuteId: string): Promise<Snapshot> {
  return JSON.parse(JSON.stringify(await (await routerOf(gw, chuteId)).snapshot())) as Snapshot;
}

/** Waits until the router for `chuteId` lists exactly `count` instances. */
export async function waitForInstances(gw: Gateway, chuteId: string, count: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const snap = await routerSnapshot(gw, chuteId);
    if (snap.instances.length === count) return;
    if (Date.now() > deadline) throw new Error(`router for ${chuteId} has ${snap.instances.length} instances, wanted ${count}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
