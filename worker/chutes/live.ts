import type { RouterSnapshot } from "../../durable-objects/router-types.ts";
import type { ScalerState } from "../../durable-objects/scaler-types.ts";
import { log } from "../log.ts";

/**
 * The chute's Durable Objects as the chutes API uses them: its ChuteRouter (live instances and
 * request stats) and its ChuteScaler (target, pending deploys, windows; poked after a change,
 * retired on delete). Both are keyed by the chute's id.
 */

const routerOf = (env: Env, chuteId: string) => env.CHUTE_ROUTER.get(env.CHUTE_ROUTER.idFromName(chuteId));
const scalerOf = (env: Env, chuteId: string) => env.CHUTE_SCALER.get(env.CHUTE_SCALER.idFromName(chuteId));

/** What is live now; a Durable Object that does not answer reads as null (logged), not a failed GET. */
export async function liveState(env: Env, chuteId: string): Promise<{ snapshot: RouterSnapshot | null; scaler: ScalerState | null }> {
  const [snapshot, scaler] = await Promise.all([
    routerOf(env, chuteId).snapshot().catch((err: unknown) => failed("router", chuteId, err)),
    scalerOf(env, chuteId).state().catch((err: unknown) => failed("scaler", chuteId, err)),
  ]);
  return { snapshot, scaler };
}

function failed(component: "router" | "scaler", chuteId: string, err: unknown): null {
  log.warn("chute.live_unavailable", { component: "chutes", chuteId, from: component, error: err instanceof Error ? err.message : String(err) });
  return null;
}

/**
 * Ask the scaler to act on the chute's current needs now rather than at its next tick. A
 * failure is logged, not the caller's error: the change is saved and the scaler's own alarm
 * picks it up.
 */
export async function pokeScaler(env: Env, chuteId: string): Promise<void> {
  try {
    await scalerOf(env, chuteId).poke(chuteId);
  } catch (err) {
    log.warn("chute.poke_failed", { component: "chutes", chuteId, error: err instanceof Error ? err.message : String(err) });
  }
}

/** The chute's concurrency per instance changed: running instances take it at once. */
export async function applyConcurrency(env: Env, chuteId: string, concurrency: number): Promise<void> {
  await routerOf(env, chuteId).setConcurrency(concurrency);
}

/** Drain every instance of the chute and stop scaling it; how many instances were asked to drain. */
export async function retireChute(env: Env, chuteId: string, reason: string): Promise<number> {
  return await scalerOf(env, chuteId).retire(chuteId, reason);
}
