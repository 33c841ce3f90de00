/**
 * Call a Durable Object, trying again on failure, each attempt on a fresh stub from `stub()`.
 * A stub that saw an infrastructure error (the object was reset, the connection lost) fails every
 * later call (Cloudflare's DurableObjectStub docs; in workerd, after the object's ctx.abort() the
 * same stub kept failing while a new one was answered), so retrying on it could never succeed.
 * Only for calls the object applies once however often they arrive (idempotent by an id).
 * Attempt n+1 starts `backoffMs * n` after attempt n failed; the last failure is thrown.
 */
export async function callFresh<S, R>(stub: () => S, call: (s: S) => Promise<R>, attempts: number, backoffMs: number): Promise<R> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(stub());
    } catch (err) {
      if (attempt >= attempts) throw err;
      await new Promise((r) => setTimeout(r, backoffMs * attempt));
    }
  }
}
