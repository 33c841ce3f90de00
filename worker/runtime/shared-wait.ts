/**
 * Wait, in this request, for a promise that another request's I/O will settle (a batch it
 * flushes, a ledger call it makes). workerd cancels a request whose remaining work waits on
 * nothing of its own, even inside waitUntil, so a timer of this request's own keeps it alive
 * meanwhile.
 */
export function awaitShared<T>(promise: Promise<T>): Promise<T> {
  const keepAlive = setInterval(() => undefined, 1_000);
  return promise.finally(() => clearInterval(keepAlive));
}
