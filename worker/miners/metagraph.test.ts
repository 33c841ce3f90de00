import { describe, expect, it } from "vitest";
import { hotkeyFromSeed, ss58Encode } from "../../protocol/index.ts";
import fixture from "../../test/fixtures/metagraph-sn64.json" with { type: "json" };
import { FIXTURE_NEURONS, fixtureColdkey, fixtureMiner, fixtureSnapshot } from "../../test/fixtures/metagraph-sn64.ts";
import { MetagraphSnapshot, hotkeysOf, planImport, type RegistryEntry } from "./metagraph.ts";

const snapshot = () => MetagraphSnapshot.parse(fixture);
const hotkey = (uid: number) => fixtureMiner(uid).id;

/** The first issue's path and message, or null when the snapshot parses. */
function refusal(input: unknown): { path: string; message: string } | null {
  const r = MetagraphSnapshot.safeParse(input);
  if (r.success) return null;
  const issue = r.error.issues[0]!;
  return { path: issue.path.join("."), message: issue.message };
}

function withNeuron(i: number, patch: Record<string, unknown>) {
  const snap = structuredClone(fixture);
  Object.assign(snap.neurons[i]!, patch);
  return snap;
}

describe("metagraph snapshot format", () => {
  it("loads the fixture file: real SS58 keys from fixed seeds, extra exporter fields kept aside", () => {
    expect(fixture).toEqual(fixtureSnapshot());
    const snap = snapshot();
    expect(snap).toMatchObject({ netuid: 64, block: 5_123_456, network: "finney" });
    expect(snap.neurons).toHaveLength(FIXTURE_NEURONS);
    expect(snap.neurons[3]).toMatchObject({ uid: 3, hotkey: hotkey(3), coldkey: fixtureColdkey(0), validator_permit: false });
    expect(new Set(snap.neurons.map((n) => n.coldkey)).size).toBe(3);
  });

  it("refuses invalid addresses: a broken checksum, another network's prefix, not base58", () => {
    const broken = hotkey(2).slice(0, -1) + (hotkey(2).endsWith("a") ? "b" : "a");
    expect(refusal(withNeuron(2, { hotkey: broken }))).toEqual({ path: "neurons.2.hotkey", message: "must be an SS58 address (prefix 42)" });
    const polkadot = ss58Encode(hotkeyFromSeed(new Uint8Array(32).fill(7)).publicKey, 0);
    expect(refusal(withNeuron(5, { coldkey: polkadot }))?.path).toBe("neurons.5.coldkey");
    expect(refusal(withNeuron(0, { hotkey: "5C0OIl" }))?.path).toBe("neurons.0.hotkey");
    expect(refusal(withNeuron(0, { hotkey: 42 }))?.path).toBe("neurons.0.hotkey");
  });

  it("refuses a hotkey or a uid listed twice", () => {
    expect(refusal(withNeuron(4, { hotkey: hotkey(1) }))).toEqual({ path: "neurons.4.hotkey", message: "hotkey listed twice (also neurons[1])" });
    expect(refusal(withNeuron(6, { uid: 2 }))).toEqual({ path: "neurons.6.uid", message: "uid 2 is listed twice (also neurons[2])" });
  });

  it("refuses an empty snapshot, and one without netuid, block or neurons", () => {
    expect(refusal({ ...fixture, neurons: [] })?.path).toBe("neurons");
    for (const field of ["netuid", "block", "neurons"]) {
      const snap: Record<string, unknown> = structuredClone(fixture);
      delete snap[field];
      expect(refusal(snap)?.path).toBe(field);
    }
    expect(refusal(withNeuron(1, { uid: -1 }))?.path).toBe("neurons.1.uid");
  });
});

describe("planning an import", () => {
  const entry = (uid: number, patch: Partial<RegistryEntry> = {}): RegistryEntry => ({
    id: hotkey(uid),
    source: "metagraph",
    status: "active",
    uid,
    coldkey: fixtureColdkey(uid % 3),
    ...patch,
  });

  it("adds every neuron to an empty registry", () => {
    const plan = planImport(snapshot(), []);
    expect(plan.summary).toEqual({ added: FIXTURE_NEURONS, updated: 0, deregistered: 0, unchanged: 0, banned_kept: 0 });
    expect(plan.changes[0]).toEqual({ kind: "add", hotkey: hotkey(0), uid: 0, coldkey: fixtureColdkey(0) });
  });

  it("changes nothing when imported twice", () => {
    const registry = snapshot().neurons.map((n) => entry(n.uid));
    expect(planImport(snapshot(), registry)).toEqual({
      summary: { added: 0, updated: 0, deregistered: 0, unchanged: FIXTURE_NEURONS, banned_kept: 0 },
      changes: [],
    });
  });

  it("updates moved uids and coldkeys, reactivates returning miners, deregisters absent ones", () => {
    const snap = snapshot();
    snap.neurons = snap.neurons.filter((n) => n.uid !== 7); // uid 7 left the subnet
    const gone = entry(7);
    const registry = [
      entry(0),
      entry(1, { uid: 9 }), // moved slot
      entry(2, { coldkey: fixtureColdkey(1) }), // hotkey changed owner
      entry(3, { status: "deregistered", uid: null }), // back after a deregistration
      gone,
      entry(99, { id: hotkey(99), status: "deregistered", uid: null }), // absent before, still absent
    ];
    const plan = planImport(snap, registry);
    expect(plan.summary).toEqual({ added: 3, updated: 3, deregistered: 1, unchanged: 1, banned_kept: 0 });
    expect(hotkeysOf(plan, "update")).toEqual([hotkey(1), hotkey(2), hotkey(3)]);
    expect(hotkeysOf(plan, "add")).toEqual([hotkey(4), hotkey(5), hotkey(6)]);
    expect(plan.changes).toContainEqual({ kind: "update", hotkey: hotkey(3), uid: 3, coldkey: fixtureColdkey(0) });
    expect(hotkeysOf(plan, "deregister")).toEqual([gone.id]);
  });

  it("keeps banned miners banned, following their uid while they stay in the metagraph", () => {
    const snap = snapshot();
    snap.neurons = snap.neurons.filter((n) => n.uid !== 6);
    const registry = [
      entry(1, { status: "banned" }), // listed, same slot: nothing to write
      entry(2, { status: "banned", uid: 5 }), // listed, moved slot: tracked, still banned
      entry(6, { status: "banned" }), // absent now: its uid is cleared, still banned
      entry(98, { id: hotkey(98), status: "banned", uid: null }), // absent before: untouched
    ];
    const plan = planImport(snap, registry);
    expect(plan.summary).toMatchObject({ banned_kept: 3, deregistered: 0, updated: 0 });
    expect(plan.changes.filter((c) => c.kind === "track_banned")).toEqual([
      { kind: "track_banned", hotkey: hotkey(2), uid: 2, coldkey: fixtureColdkey(2) },
      { kind: "track_banned", hotkey: hotkey(6), uid: null, coldkey: fixtureColdkey(0) },
    ]);
    expect(plan.changes.some((c) => c.kind !== "add" && c.kind !== "track_banned")).toBe(false);
  });

  it("never touches operator-added miners, listed or not, banned or not", () => {
    const registry = [
      entry(0, { source: "admin", uid: null, coldkey: null }),
      entry(1, { source: "admin", status: "banned", uid: null, coldkey: null }),
      entry(97, { id: hotkey(97), source: "admin", uid: null, coldkey: null }),
    ];
    const plan = planImport(snapshot(), registry);
    expect(plan.summary).toEqual({ added: FIXTURE_NEURONS - 2, updated: 0, deregistered: 0, unchanged: 1, banned_kept: 1 });
    expect(plan.changes.every((c) => c.kind === "add" && c.hotkey !== hotkey(0) && c.hotkey !== hotkey(1) && c.hotkey !== hotkey(97))).toBe(true);
  });
});
