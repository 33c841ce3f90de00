import type { Context, MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../../env.ts";

/**
 * Request ids and CORS headers, written on the Response the handler returns, or better, by the
 * handler itself as it builds its Response (CORS_HEADERS). Hono's `requestId` and `cors`
 * middlewares write their headers before the handler runs, so Hono copies each request's
 * Response once more to take them in; and setting headers on a finished Response costs workerd
 * far more than passing them to its constructor. Together about 8% of the gateway's CPU per small
 * request (`npm run bench:ab`). Preflights still go to Hono's `cors`.
 */

/** Response headers a browser client may read. */
export const EXPOSED_HEADERS: readonly string[] = ["x-request-id", "retry-after"].concat(
  ...["requests", "tokens"].map((k) => [`x-ratelimit-limit-${k}`, `x-ratelimit-remaining-${k}`, `x-ratelimit-reset-${k}`]),
);

/** The CORS headers of every /v1 response: a handler building its own Response passes them in. */
export const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": EXPOSED_HEADERS.join(","),
} as const;

export interface RequestIdOptions {
  /** The header the id is read from (when the client sent a usable one) and answered in. */
  headerName?: string;
  /** A client's id longer than this, or with characters other than [A-Za-z0-9_=-], is replaced. */
  limitLength?: number;
}

/** Sets `c.var.requestId` (the client's, when usable, else a new UUID) and answers it in a header. */
export const requestId = (options: RequestIdOptions = {}): MiddlewareHandler<AppEnv> => {
  const headerName = options.headerName ?? "x-request-id";
  const limitLength = options.limitLength ?? 255;
  return createMiddleware<AppEnv>(async function requestId(c, next) {
    const given = c.req.header(headerName);
    const id = given && given.length <= limitLength && !/[^\w\-=]/.test(given) ? given : crypto.randomUUID();
    c.set("requestId", id);
    await next();
    if (!c.res.headers.has(headerName)) setHeaders(c, [[headerName, id]]);
  });
};

/** CORS for any origin: preflights answered by Hono's `cors`, other responses given CORS_HEADERS unless they have them. */
export const openCors = (options: { maxAge: number }): MiddlewareHandler<AppEnv> => {
  const preflight = cors({ origin: "*", exposeHeaders: [...EXPOSED_HEADERS], maxAge: options.maxAge });
  const headers = Object.entries(CORS_HEADERS);
  return createMiddleware<AppEnv>(async function openCors(c, next) {
    if (c.req.method === "OPTIONS") return preflight(c, next);
    await next();
    if (!c.res.headers.has("access-control-allow-origin")) setHeaders(c, headers);
  });
};

/**
 * Set headers on the response in place; a response whose headers are immutable (one from fetch)
 * is copied first. A WebSocket upgrade is left as it is.
 */
function setHeaders(c: Context<AppEnv>, headers: readonly (readonly [string, string])[]): void {
  if (c.res.status === 101) return;
  try {
    for (const [k, v] of headers) c.res.headers.set(k, v);
  } catch {
    const copy = new Response(c.res.body, c.res);
    for (const [k, v] of headers) copy.headers.set(k, v);
    c.res = copy;
  }
}
