import type { ChuteRouter, LeaseRelease, LeaseReport } from "../../durable-objects/chute-router.ts";
import { log } from "../log.ts";
import { awaitShared } from "../runtime/shared-wait.ts";

/**
 * Router slots given back by this isolate's requests, per chute: sent with the isolate's next
 * acquire for the chute (no call of their own under load), or after RELEASE_AFTER_MS in one
 * call. A slot is busy that much longer, never less.
 */
const RELEASE_AFTER_MS = 5;

interface Pending extends LeaseRelease {
  resolve: () => void;
}

const pending = new Map<string, Pending[]>();

type Router = DurableObjectStub<ChuteRouter>;

/** Queue a release; resolves once the router has it (pass it to waitUntil). */
export function queueRelease(router: () => Router, chuteId: string, leaseId: string, report?: LeaseReport): Promise<void> {
  let list = pending.get(chuteId);
  if (!list) {
    list = [];
    pending.set(chuteId, list);
    // The timer belongs to this request, which stays alive until its own release is sent.
    setTimeout(() => void flush(router, chuteId), RELEASE_AFTER_MS);
  }
  const sent = new Promise<void>((resolve) => list.push({ leaseId, ...(report ? { report } : {}), resolve }));
  return awaitShared(sent);
}

/**
 * Releases to send (with an acquire, or on their own); call `sent` once the router answered,
 * with the error when it did not.
 */
export function takeReleases(chuteId: string): { released: LeaseRelease[]; sent: (error?: unknown) => void } {
  const list = pending.get(chuteId) ?? [];
  pending.delete(chuteId);
  return {
    released: list.map(({ leaseId, report }) => ({ leaseId, ...(report ? { report } : {}) })),
    sent: (error) => {
      // A router that did not answer lost its leases anyway (they live in its memory): a lost
      // release only leaves the slot to its expiry.
      if (error !== undefined && list.length > 0) {
        log.warn("router.release_failed", { component: "gateway", chuteId, leases: list.length, error: String(error) });
      }
      for (const p of list) p.resolve();
    },
  };
}

async function flush(router: () => Router, chuteId: string): Promise<void> {
  const { released, sent } = takeReleases(chuteId);
  if (released.length === 0) return;
  try {
    await router().releaseMany(released);
    sent();
  } catch (err) {
    sent(err);
  }
}
