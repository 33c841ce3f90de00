import type { AcquireResult, ChuteRouter, HandoverAnswer, LeaseRelease, LeaseReport } from "../../durable-objects/chute-router.ts";
import { log } from "../log.ts";
import { awaitShared } from "../runtime/shared-wait.ts";
import { mayTakeOver } from "./prefix.ts";

/**
 * Router slots given back by this isolate's requests, per chute: sent with the isolate's next
 * acquire for the chute (no call of their own under load), or in one call after a short wait: up
 * to `SLOT_RELEASE_DELAY_MS` (default 20) while the router says the chute has room, so the
 * isolate's next request can take the slot over, and at most BUSY_RELEASE_DELAY_MS otherwise (a
 * slot of a full chute is wanted elsewhere and cannot be taken over here). A slot is busy that
 * much longer, never less.
 *
 * Meanwhile the isolate's next request for the chute may take the slot over instead of asking
 * the router (one round trip less per request under load), when the router said at its last
 * answer that nobody was waiting and slots were free besides (so no other request is kept from
 * the slot) and that the slot's instance does not lag behind the chute's others (a slow or
 * failing instance's traffic is the router's to shift), the finished request went well, and the
 * new one has nothing else to be routed by (the same weight, and no conversation prefix the
 * instance may not hold). The router hears of the handover with the next call, as it would of
 * the release: it counts the request and notes its prefixes.
 */
export const DEFAULT_RELEASE_DELAY_MS = 20;
/**
 * The wait while the router's last answer was not roomy, or for a slot that may not be handed
 * over (its request failed, its instance lags). A longer wait while it is roomy holds
 * nothing back from anyone (slots are free besides) and lets more requests take a slot over: with
 * 16 requests in flight on one isolate, a 5 ms wait sent 45% of requests to the router, 20 ms 8%
 * (a client's next request often comes more than 5 ms after its last ended on a busy machine).
 */
const BUSY_RELEASE_DELAY_MS = 5;
/** Handover notes alone (no slot to give back) wait this long for a call to ride with. */
const HANDOVER_NOTE_AFTER_MS = 100;
/** The router's "roomy" answer holds this long. */
const ROOMY_FOR_MS = 250;

/** The lease a request took, as far as a handover needs it. */
export interface HeldLease {
  leaseId: string;
  instanceId: string;
  minerId: string;
  weight: number;
  /** The request's conversation prefixes (shortest first). */
  prefixes: string[];
}

interface Pending {
  lease: HeldLease;
  report?: LeaseReport;
  /** Set once the slot went to another request: what the router is told instead of a release. */
  handedOver?: { prefixes: string[] };
  at: number;
  /** When the slot must go back to the router, unless handed over first. */
  releaseAt: number;
  resolve: () => void;
}

interface ChuteReleases {
  pending: Pending[];
  /** When the armed flush is due (Infinity: none armed), and which timer it is (older ones do nothing). */
  flushAt: number;
  timer: number;
  /** Until when the router's last answer lets slots be handed over, except those on `lagging` instances. */
  roomyUntil: number;
  lagging: readonly string[];
}

const chutes = new Map<string, ChuteReleases>();

type Router = DurableObjectStub<ChuteRouter>;

function stateOf(chuteId: string): ChuteReleases {
  let s = chutes.get(chuteId);
  if (!s) {
    s = { pending: [], flushAt: Infinity, timer: 0, roomyUntil: 0, lagging: [] };
    chutes.set(chuteId, s);
  }
  return s;
}

/** Note the router's answer: whether slots may be handed over for a while, and which may not. */
function routerSaid(chuteId: string, answer: Partial<HandoverAnswer>): void {
  const s = stateOf(chuteId);
  s.roomyUntil = answer.roomy ? Date.now() + ROOMY_FOR_MS : 0;
  s.lagging = answer.lagging ?? [];
}

/** Queue a release, sent within `delayMs`; resolves once the router has it (pass it to waitUntil). */
export function queueRelease(router: () => Router, chuteId: string, lease: HeldLease, report: LeaseReport | undefined, delayMs: number): Promise<void> {
  const s = stateOf(chuteId);
  const at = Date.now();
  // The long wait is for a handover: a slot that cannot be handed over goes back soon.
  const releaseAt = at + (s.roomyUntil >= at && mayHandOver(s, lease, report) ? delayMs : Math.min(delayMs, BUSY_RELEASE_DELAY_MS));
  const sent = new Promise<void>((resolve) => s.pending.push({ lease, ...(report ? { report } : {}), at, releaseAt, resolve }));
  // The timer belongs to this request, which stays alive until its own release is sent.
  schedule(router, chuteId, s, releaseAt);
  return awaitShared(sent);
}

/**
 * A slot given back here that a new request for the chute may take over (see above), as the
 * router would have granted it; null when it should ask the router.
 */
export function takeOver(chuteId: string, weight: number, prefixes: string[]): Extract<AcquireResult, { ok: true }> | null {
  const s = chutes.get(chuteId);
  if (!s || s.roomyUntil < Date.now()) return null;
  for (const p of s.pending) {
    if (p.handedOver || p.lease.weight !== weight || !mayHandOver(s, p.lease, p.report)) continue;
    // A conversation goes where the router's prefix affinity sends it (see mayTakeOver).
    if (!mayTakeOver(p.lease.prefixes, prefixes)) continue;
    p.handedOver = { prefixes };
    const { leaseId, instanceId, minerId } = p.lease;
    return { ok: true, leaseId, instanceId, minerId, affinity: false };
  }
  return null;
}

/**
 * Whether a slot may go to another request at all: its request went well, and its instance does
 * not lag (a lagging instance's traffic is the router's to shift elsewhere).
 */
function mayHandOver(s: ChuteReleases, lease: HeldLease, report: LeaseReport | undefined): boolean {
  return (!report || report.result === "ok") && !s.lagging.includes(lease.instanceId);
}

function schedule(router: () => Router, chuteId: string, s: ChuteReleases, at: number): void {
  if (s.flushAt <= at) return;
  s.flushAt = at;
  const timer = ++s.timer;
  setTimeout(() => void flush(router, chuteId, timer), Math.max(0, at - Date.now()));
}

/** When the queued notes must go: soon for a slot to give back, later for handover notes alone. */
function dueAt(s: ChuteReleases): number {
  let due = Infinity;
  for (const p of s.pending) due = Math.min(due, p.handedOver ? p.at + HANDOVER_NOTE_AFTER_MS : p.releaseAt);
  return due;
}

/**
 * Releases and handover notes to send (with an acquire, or on their own); call `sent` once the
 * router answered (with its answer), or with the error when it did not.
 */
export function takeReleases(chuteId: string): { released: LeaseRelease[]; sent: (answer: Partial<HandoverAnswer> | null, error?: unknown) => void } {
  const s = chutes.get(chuteId);
  const list = s?.pending ?? [];
  if (s) {
    s.pending = [];
    s.flushAt = Infinity;
  }
  return {
    released: list.map(({ lease, report, handedOver }) => ({
      leaseId: lease.leaseId,
      ...(report ? { report } : {}),
      ...(handedOver ? { handedOver: { ...handedOver, instanceId: lease.instanceId } } : {}),
    })),
    sent: (answer, error) => {
      if (answer) routerSaid(chuteId, answer);
      // A router that did not answer lost its leases anyway (they live in its memory): a lost
      // release only leaves the slot to its expiry.
      if (error !== undefined && list.length > 0) {
        log.warn("router.release_failed", { component: "gateway", chuteId, leases: list.length, error: String(error) });
      }
      for (const p of list) p.resolve();
    },
  };
}

async function flush(router: () => Router, chuteId: string, timer: number): Promise<void> {
  const s = chutes.get(chuteId);
  if (!s || s.timer !== timer || s.pending.length === 0) return;
  s.flushAt = Infinity;
  const due = dueAt(s);
  if (due > Date.now()) return schedule(router, chuteId, s, due);
  const { released, sent } = takeReleases(chuteId);
  try {
    sent(await router().releaseMany(released));
  } catch (err) {
    sent(null, err);
  }
}
