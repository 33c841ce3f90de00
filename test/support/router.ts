import type { RouterSnapshot } from "../../durable-objects/router-types.ts";
import type { Gateway } from "./gateway.ts";

export type Snapshot = RouterSnapshot;

/** The chute router's view, read through Miniflare's RPC proxy to the Durable Object. */
export async function routerSnapshot(gw: Gateway, chuteId: string): Promise<Snapshot> {
  const ns = await gw.mf.getDurableObjectNamespace("CHUTE_ROUTER");
  // Miniflare proxies RPC to the Durable Object; its types only describe fetch().
  const stub = ns.get(ns.idFromName(chuteId)) as unknown as { snapshot(): Promise<Snapshot> };
  return JSON.parse(JSON.stringify(await stub.snapshot())) as Snapshot;
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
