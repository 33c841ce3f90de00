import type { HoldResult, LedgerAudit, LedgerEntry, LedgerSummary, LeaseSync, LeaseSyncResult, SettleResult } from "../../durable-objects/ledger-types.ts";
import type { Gateway } from "./gateway.ts";

/** The AccountLedger's RPC methods, called on the real Durable Object through Miniflare. */
export interface LedgerClient {
  summary(accountId: string): Promise<LedgerSummary>;
  audit(): Promise<LedgerAudit>;
  entries(limit?: number): Promise<LedgerEntry[]>;
  hold(accountId: string, id: string, amountNano: number, ttlMs: number): Promise<HoldResult>;
  settle(accountId: string, id: string, costNano: number): Promise<SettleResult>;
  credit(accountId: string, reference: string, amountNano: number): Promise<{ applied: boolean; balanceNano: number }>;
  /** An isolate wallet's call (worker/billing/wallet.ts). */
  lease(accountId: string, req: LeaseSync): Promise<LeaseSyncResult>;
}

export async function ledgerOf(gw: Gateway, accountId: string): Promise<LedgerClient> {
  const ns = await gw.mf.getDurableObjectNamespace("ACCOUNT_LEDGER");
  const stub = ns.get(ns.idFromName(accountId)) as unknown as LedgerClient;
  // Results arrive as proxies; copy them into plain objects for assertions.
  const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
  return {
    summary: async (a) => plain(await stub.summary(a)),
    audit: async () => plain(await stub.audit()),
    entries: async (n) => plain(await stub.entries(n)),
    hold: async (a, id, amount, ttl) => plain(await stub.hold(a, id, amount, ttl)),
    settle: async (a, id, cost) => plain(await stub.settle(a, id, cost)),
    credit: async (a, ref, amount) => plain(await stub.credit(a, ref, amount)),
    lease: async (a, req) => plain(await stub.lease(a, req)),
  };
}
