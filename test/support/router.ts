import type { Gateway } from "./gateway.ts";

/** The chute router's view, read through Miniflare (waits until `pred` holds). */
export async function waitForInstances(gw: Gateway, chuteId: string, count: number, timeoutMs = 10_000): Promise<void> {
  const ns = await gw.mf.getDurableObjectNamespace("CHUTE_ROUTER");
  // Miniflare proxies RPC to the Durable Object; its types only describe fetch().
  const stub = ns.get(ns.idFromName(chuteId)) as unknown as { snapshot(): Promise<{ instances: { instanceId: string; inflight: number }[] }> };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const snap = await stub.snapshot();
    if (snap.instances.length === count) return;
    if (Date.now() > deadline) throw new Error(`router for ${chuteId} has ${snap.instances.length} instances, wanted ${count}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
