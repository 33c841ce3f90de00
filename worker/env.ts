import type { ApiKeyRecord, ChuteRecord } from "./catalog/types.ts";

/** The Hono environment: bindings come from `wrangler types` (worker-configuration.d.ts). */
export type AppEnv = {
  Bindings: Env;
  Variables: {
    requestId: string;
    apiKey: ApiKeyRecord;
    /** Aborts when the client disconnects (the incoming request's own signal). */
    clientGone: AbortSignal;
  };
};

export type { ApiKeyRecord, ChuteRecord };

/** Numeric settings from wrangler `vars`, with defaults when unset or malformed. */
export function numberVar(value: string | undefined, fallback: number): number {
  const n = value === undefined ? NaN : Number(value);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}
