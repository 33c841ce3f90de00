/**
 * Wait, in this request, for a promise that another request's I/O will settle (a batch it
 * flushes, a ledger call it makes). workerd cancels a request whose remaining work waits on
 * nothing of its own, even inside waitUntil, so a timer of this request's own keeps it alive
 * meanwhile.
 *
 * The timer is not cleared when the wait is over: a Worker request ends once its response and
 * its waitUntil promises are done, and its timers go with it (only a Durable Object's timers hold
 * its requests open; this is for Worker code). Clearing it cost more than arming it: with the
 * clear, these timers took 12% of the gateway's JavaScript time under small requests (three per
 * request); without it, bench:ab read -6.2% workerd CPU per request and +8.8% requests/s.
 */
export function awaitShared<T>(promise: Promise<T>): Promise<T> {
  setInterval(noop, KEEPALIVE_MS);
  return promise;
}

/** Long enough never to fire in a request that ends on time; it only has to exist. */
const KEEPALIVE_MS = 1_000;

function noop(): void {}
