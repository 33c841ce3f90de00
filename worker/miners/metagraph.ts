import { and, eq, inArray, ne } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { z } from "zod";
import { isHotkey } from "../../protocol/index.ts";
import { miners } from "../db/schema.ts";

/**
 * Metagraph snapshots: the subnet's registered neurons, as a validator exports them with the
 * bittensor SDK (`bt.metagraph(netuid)`), imported into the miner registry by the operator
 * (`npm run admin -- miners import --file snapshot.json`; the chain is not reachable from here).
 *
 * The format (JSON):
 *
 * ```json
 * {
 *   "netuid": 64,                      // the subnet
 *   "block": 5123456,                  // the block the snapshot was taken at
 *   "network": "finney",               // optional
 *   "neurons": [
 *     { "uid": 0,                      // the neuron's slot on the subnet
 *       "hotkey": "5F...",             // SS58 (prefix 42): who connects
 *       "coldkey": "5G...",            // SS58: who owns the hotkey
 *       "stake": "1204.5",             // optional, and any other field the exporter adds:
 *       "active": true,                //   recorded nowhere, ignored
 *       "validator_permit": false }
 *   ]
 * }
 * ```
 *
 * Every hotkey and coldkey must be a valid SS58 address; a uid or hotkey listed twice refuses
 * the whole snapshot, and so does an empty one (a botched export must not deregister everyone).
 * Every neuron is registered, validators included: the registry says who may connect, not who
 * earns. One gateway serves one subnet: an import replaces what the previous one registered.
 */

/** Subnets have 256 uids today; room to spare, within the admin API's body limit. */
export const MAX_NEURONS = 4096;

const Ss58 = z.string().refine(isHotkey, "must be an SS58 address (prefix 42)");

const Neuron = z.looseObject({
  uid: z.int().min(0).max(65_535),
  hotkey: Ss58,
  coldkey: Ss58,
  stake: z.union([z.string().max(64), z.number()]).optional(),
  active: z.boolean().optional(),
  validator_permit: z.boolean().optional(),
});

export const MetagraphSnapshot = z
  .looseObject({
    netuid: z.int().min(0).max(65_535),
    block: z.int().min(0),
    network: z.string().max(64).optional(),
    neurons: z.array(Neuron).min(1, "a snapshot lists at least one neuron").max(MAX_NEURONS),
  })
  .superRefine((snap, ctx) => {
    const byUid = new Map<number, number>();
    const byHotkey = new Map<string, number>();
    snap.neurons.forEach((n, i) => {
      const uidAt = byUid.get(n.uid);
      if (uidAt !== undefined) ctx.addIssue({ code: "custom", path: ["neurons", i, "uid"], message: `uid ${n.uid} is listed twice (also neurons[${uidAt}])` });
      const hotkeyAt = byHotkey.get(n.hotkey);
      if (hotkeyAt !== undefined) ctx.addIssue({ code: "custom", path: ["neurons", i, "hotkey"], message: `hotkey listed twice (also neurons[${hotkeyAt}])` });
      byUid.set(n.uid, i);
      byHotkey.set(n.hotkey, i);
    });
  });
export type MetagraphSnapshot = z.infer<typeof MetagraphSnapshot>;

type MinerRow = typeof miners.$inferSelect;
/** What the planner needs to know of a registered miner. */
export type RegistryEntry = Pick<MinerRow, "id" | "source" | "status" | "uid" | "coldkey">;

export interface ImportSummary {
  /** Hotkeys new to the registry. */
  added: number;
  /** Imported miners whose uid or coldkey changed, or that were deregistered and are back. */
  updated: number;
  /** Active imported miners absent from this snapshot. */
  deregistered: number;
  /** Hotkeys in the snapshot already registered as they are (operator-added ones are never changed). */
  unchanged: number;
  /** Banned hotkeys the import would otherwise have changed: they stay banned. */
  banned_kept: number;
}

/** One registry write. */
export type RegistryChange =
  | { kind: "add"; hotkey: string; uid: number; coldkey: string }
  /** An imported miner in the snapshot: active, with its current uid and coldkey. */
  | { kind: "update"; hotkey: string; uid: number; coldkey: string }
  /** A banned imported miner: its uid (null once absent) and coldkey follow the metagraph; it stays banned. */
  | { kind: "track_banned"; hotkey: string; uid: number | null; coldkey: string | null }
  | { kind: "deregister"; hotkey: string };

export interface ImportPlan {
  summary: ImportSummary;
  changes: RegistryChange[];
}

/**
 * What importing `snapshot` changes in a registry holding `registry` (pure). A miner's `uid` is
 * set while it is in the latest snapshot and cleared when it leaves it (the slot then belongs
 * to another hotkey), which is also how unbanning an imported miner knows whether to make it
 * active or deregistered.
 */
export function planImport(snapshot: MetagraphSnapshot, registry: readonly RegistryEntry[]): ImportPlan {
  const summary: ImportSummary = { added: 0, updated: 0, deregistered: 0, unchanged: 0, banned_kept: 0 };
  const changes: RegistryChange[] = [];
  const known = new Map(registry.map((r) => [r.id, r]));
  const listed = new Set<string>();
  for (const { uid, hotkey, coldkey } of snapshot.neurons) {
    listed.add(hotkey);
    const row = known.get(hotkey);
    if (!row) {
      changes.push({ kind: "add", hotkey, uid, coldkey });
      summary.added++;
    } else if (row.status === "banned") {
      summary.banned_kept++;
      if (row.source === "metagraph" && (row.uid !== uid || row.coldkey !== coldkey)) changes.push({ kind: "track_banned", hotkey, uid, coldkey });
    } else if (row.source === "admin") {
      summary.unchanged++;
    } else if (row.status === "active" && row.uid === uid && row.coldkey === coldkey) {
      summary.unchanged++;
    } else {
      changes.push({ kind: "update", hotkey, uid, coldkey });
      summary.updated++;
    }
  }
  for (const row of registry) {
    if (row.source !== "metagraph" || listed.has(row.id)) continue;
    if (row.status === "active") {
      changes.push({ kind: "deregister", hotkey: row.id });
      summary.deregistered++;
    } else if (row.status === "banned" && row.uid !== null) {
      changes.push({ kind: "track_banned", hotkey: row.id, uid: null, coldkey: row.coldkey });
      summary.banned_kept++;
    }
  }
  return { summary, changes };
}

/** D1 binds at most 100 parameters per statement; a miners row insert binds 8. */
const ROWS_PER_INSERT = 12;
const IDS_PER_UPDATE = 90;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * The plan as D1 statements, run as one batch (one transaction). Each write re-checks what the
 * plan assumed, so an operator's ban or add landing between the read and the batch wins: an
 * insert never overwrites a row, an update never touches a banned or operator-added miner.
 */
function statements(db: ReturnType<typeof drizzle>, plan: ImportPlan) {
  const adds = plan.changes.flatMap((c) => (c.kind === "add" ? [c] : []));
  const gone = plan.changes.flatMap((c) => (c.kind === "deregister" ? [c.hotkey] : []));
  const out = [];
  for (const rows of chunks(adds, ROWS_PER_INSERT)) {
    out.push(
      db
        .insert(miners)
        .values(rows.map((r) => ({ id: r.hotkey, uid: r.uid, coldkey: r.coldkey, source: "metagraph" as const, status: "active" as const })))
        .onConflictDoNothing(),
    );
  }
  for (const c of plan.changes) {
    if (c.kind === "update") {
      out.push(
        db
          .update(miners)
          .set({ uid: c.uid, coldkey: c.coldkey, status: "active" })
          .where(and(eq(miners.id, c.hotkey), eq(miners.source, "metagraph"), ne(miners.status, "banned"))),
      );
    } else if (c.kind === "track_banned") {
      out.push(
        db
          .update(miners)
          .set({ uid: c.uid, coldkey: c.coldkey })
          .where(and(eq(miners.id, c.hotkey), eq(miners.source, "metagraph"), eq(miners.status, "banned"))),
      );
    }
  }
  for (const ids of chunks(gone, IDS_PER_UPDATE)) {
    out.push(
      db
        .update(miners)
        .set({ status: "deregistered", uid: null })
        .where(and(inArray(miners.id, ids), eq(miners.source, "metagraph"), eq(miners.status, "active"))),
    );
  }
  return out;
}

/** Plan the import against the registry in D1 and apply it (unless `dryRun`). */
export async function importSnapshot(d1: D1Database, snapshot: MetagraphSnapshot, opts: { dryRun?: boolean } = {}): Promise<ImportPlan> {
  const db = drizzle(d1);
  const registry = await db
    .select({ id: miners.id, source: miners.source, status: miners.status, uid: miners.uid, coldkey: miners.coldkey })
    .from(miners)
    .all();
  const plan = planImport(snapshot, registry);
  const [first, ...rest] = statements(db, plan);
  if (first && !opts.dryRun) await db.batch([first, ...rest]);
  return plan;
}

/** The hotkeys of one kind of change (for the operator's report, and to evict deregistered agents). */
export const hotkeysOf = (plan: ImportPlan, kind: RegistryChange["kind"]): string[] =>
  plan.changes.filter((c) => c.kind === kind).map((c) => c.hotkey);
