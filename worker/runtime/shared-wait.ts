import { AsyncLocalStorage } from "node:async_hooks";

/**
 * Wait, in this request, for a promise that another request's I/O will settle (a batch it
 * flushes, a ledger call it makes). workerd cancels a request whose remaining work waits on
 * nothing of its own, even inside waitUntil, so a timer of this request's own keeps it alive
 * meanwhile.
 *
 * One timer per request, armed at its first such wait and never cleared: a Worker request ends
 * once its response and its waitUntil promises are done, and its timers go with it (only a
 * Durable Object's timers hold its requests open; this is for Worker code). A request makes
 * several such waits (its charge, its router slot, its invocation row); a timer for each, each
 * cleared when its wait ended, cost 12% of the gateway's JavaScript time under small requests.
 * bench:ab small: leaving them uncleared, -6.2% and -5.7% workerd CPU per request; one per
 * request, a further -3.1% (and +4.9% requests/s).
 */
export function awaitShared<T>(promise: Promise<T>): Promise<T> {
  const request = requests.getStore();
  if (request?.keptAlive) return promise;
  if (request) request.keptAlive = true;
  setInterval(noop, KEEPALIVE_MS);
  return promise;
}

/** Run a request's handler (the Worker's fetch) so that its shared waits share one timer. */
export function asRequest<T>(handle: () => T): T {
  return requests.run({ keptAlive: false }, handle);
}

const requests = new AsyncLocalStorage<{ keptAlive: boolean }>();

/** Long enough never to fire in a request that ends on time; it only has to exist. */
const KEEPALIVE_MS = 1_000;

function noop(): void {}
