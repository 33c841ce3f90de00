/**
 * Harness for `npm run bench:router`: each request runs `n` acquire/release pairs against one
 * ChuteRouter (the real class), one after another, as dispatch does for a request. Many such
 * requests in parallel show the router's throughput ceiling (one Durable Object is one thread).
 */
import { ChuteRouter } from "../../durable-objects/chute-router.ts";

export { ChuteRouter };

interface HarnessEnv {
  CHUTE_ROUTER: DurableObjectNamespace<ChuteRouter>;
}

export default {
  async fetch(request: Request, env: HarnessEnv): Promise<Response> {
    const url = new URL(request.url);
    const router = env.CHUTE_ROUTER.get(env.CHUTE_ROUTER.idFromName(url.searchParams.get("chute") ?? "bench"));
    if (url.pathname === "/setup") {
      const instances = Number(url.searchParams.get("instances") ?? 8);
      for (let m = 0; m < instances; m++) await router.register(`miner-${m}`, [{ instanceId: `i-${m}`, maxConcurrency: 100_000 }]);
      return new Response("ok");
    }
    const n = Number(url.searchParams.get("n") ?? 100);
    if (url.pathname === "/noop") {
      for (let i = 0; i < n; i++) await router.snapshot();
      return Response.json({ ok: n });
    }
    const prefixes = [String(Math.random()).slice(2, 18)];
    let ok = 0;
    for (let i = 0; i < n; i++) {
      const lease = await router.acquire({ avoid: [], waitMs: 0, prefixes });
      if (!lease.ok) continue;
      await router.release(lease.leaseId, { result: "ok", ttftMs: 20, tokens: 64, streamMs: 200 });
      ok++;
    }
    return Response.json({ ok });
  },
};
