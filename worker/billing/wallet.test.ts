import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { LeaseSync, LeaseSyncResult } from "../../durable-objects/ledger-types.ts";
import { busyWallet, directRequest } from "./wallet.ts";

/**
 * A ledger whose calls that give a lease back never answer: what a wallet sees when the runtime
 * drops its call with the request it was made for (workerd tears down a request's pending I/O
 * with it). That cannot be brought about on demand in workerd, so this stands in for the ledger.
 * Other calls grant what they are asked for.
 */
function hungCloseLedger() {
  const releases: (() => void)[] = [];
  let version = 0;
  const answer = (req: LeaseSync, heldNano: number): LeaseSyncResult => ({
    version: ++version,
    heldNano,
    availableNano: 1_000_000_000,
    charged: Object.fromEntries(req.charges.map((c) => [c.id, c.costNano])),
    rates: [],
  });
  const stub = {
    lease: (_account: string, req: LeaseSync): Promise<LeaseSyncResult> =>
      req.shrink ? new Promise((resolve) => releases.push(() => resolve(answer(req, 0)))) : Promise.resolve(answer(req, req.mustNano + req.extraNano)),
  };
  return { ledger: () => stub as never, releases };
}

const ask = (id: string) => ({ invocationId: id, amountNano: 1_000, rate: { keyId: "k", rpm: 0, tpm: 0, tokens: 10 }, ttlMs: 60_000 });

describe("wallet", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("a wallet whose lease-returning call never answers is left behind after a while, and a new one takes its place", async () => {
    const { ledger, releases } = hungCloseLedger();
    const account = "acct-hung-close";
    // Another request of the account in flight here: the wallet is worth opening.
    const other = directRequest(account);
    const first = busyWallet(account, ledger)!;
    expect(first).not.toBeNull();
    const admitted = await first.admit(ask("inv-1"));
    expect(admitted.ok).toBe(true);
    if (!admitted.ok) return;
    await admitted.settle(0, 0);
    // Idle: the wallet gives its lease back, and that call hangs.
    await vi.advanceTimersByTimeAsync(300);
    expect(first.closing).toBe(true);
    expect(releases).toHaveLength(1);
    // Meanwhile requests go to the ledger directly.
    expect(busyWallet(account, ledger)).toBeNull();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(busyWallet(account, ledger)).toBeNull();
    // Long past any slow call: the stuck wallet is left behind.
    await vi.advanceTimersByTimeAsync(6_000);
    const second = busyWallet(account, ledger);
    expect(second).not.toBeNull();
    expect(second).not.toBe(first);
    const again = await second!.admit(ask("inv-2"));
    expect(again.ok).toBe(true);
    // The old call answering at last does not take the new wallet's place.
    releases[0]!();
    await vi.advanceTimersByTimeAsync(0);
    expect(busyWallet(account, ledger)).toBe(second);
    other();
  });
});
