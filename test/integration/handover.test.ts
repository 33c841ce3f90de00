import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { makeSeed, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { routerOf, routerSnapshot, waitForInstances } from "../support/router.ts";
import { instanceOf, UpstreamAgents } from "../support/upstream-agents.ts";

/**
 * Slot handover: a finished request's router slot, while it waits to go back, goes straight to
 * the isolate's next request for the chute (see worker/inference/releases.ts). Whether a request
 * arrives within the default 20 ms wait is up to the machine's timing, so this gateway lets slots
 * wait 200 ms (`SLOT_RELEASE_DELAY_MS`): a client's next request always falls inside it.
 */
const RELEASE_DELAY_MS = 200;
let gw: Gateway;
let client: OpenAI;
const fleet = new UpstreamAgents(() => gw);

beforeAll(async () => {
  gw = await startGateway({
    seed: makeSeed({ minerNames: ["miner-a", "miner-b"] }),
    vars: { MINER_STALE_AFTER_MS: "1500", QUEUE_WAIT_MS: "10000", SLOT_RELEASE_DELAY_MS: String(RELEASE_DELAY_MS) },
  });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterEach(() => fleet.stopAgents());
afterAll(async () => {
  await fleet.close();
  await gw?.close();
});

describe("slot handover", () => {
  it("a finished request's slot goes straight to the gateway's next request while the chute has room, never past requests queued for it; every request is counted and every slot freed", async () => {
    await fleet.start("miner-a", { delayPerTokenMs: 2 }, 8);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    const ask = () => client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    const loop = async (n: number) => {
      for (let i = 0; i < n; i++) expect((await ask()).choices[0]?.finish_reason).toBe("length");
    };
    const idle = async () => expect.poll(async () => (await routerSnapshot(gw, TINY_CHUTE.id)).instances[0]?.inflight).toBe(0);

    // Room to spare (3 clients, 8 slots): each client's next request takes over a slot waiting to
    // go back, its own or another's, except when the router's "roomy" answer (good for 250 ms)
    // has lapsed and it asks the router again.
    const before = await routerSnapshot(gw, TINY_CHUTE.id);
    await Promise.all([loop(10), loop(10), loop(10)]);
    await idle();
    const roomy = await routerSnapshot(gw, TINY_CHUTE.id);
    expect(roomy.stats.requests - before.stats.requests).toBe(30);
    expect(roomy.handovers - before.handovers).toBeGreaterThanOrEqual(10);

    // One slot, three clients: each request queues at the router, so none is handed a slot.
    await fleet.stopAgents();
    await fleet.start("miner-b", { delayPerTokenMs: 2 }, 1);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    await new Promise((r) => setTimeout(r, 300)); // the earlier "roomy" answer has lapsed
    await Promise.all([loop(4), loop(4), loop(4)]);
    await idle();
    const full = await routerSnapshot(gw, TINY_CHUTE.id);
    expect(full.stats.requests - roomy.stats.requests).toBe(12);
    expect(full.handovers).toBe(roomy.handovers);
  });

  it("a slow instance's slots are not handed over: once the router knows it lags, requests go to the fast instance", async () => {
    const ask = async () => (await client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hello" }], max_tokens: 20 })).id;
    // The router learns the fast instance's speed first...
    await fleet.start("miner-b", { delayPerTokenMs: 1 }, 4);
    await waitForInstances(gw, TINY_CHUTE.id, 1);
    for (let i = 0; i < 3; i++) await ask();
    // ...then a slow one joins (0.2 s a request). Its speed unknown, it ties with the fast one and
    // wins on its id: the next request goes to it. Every later request of this one client falls
    // inside the time a slot waits to go back, and within the router's "roomy" answer (renewed by
    // the handover notes), so without the router saying that the instance lags the client would
    // take the slow slot over for all its requests.
    await fleet.start("miner-a", { delayPerTokenMs: 10 }, 4);
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    await new Promise((r) => setTimeout(r, 300)); // the warm-up's slot has gone back, its "roomy" answer lapsed
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await ask());
    const servedBy = async (id: string) =>
      (await gw.db.prepare("SELECT instance_id FROM invocations WHERE id = ?").bind(id).first<{ instance_id: string | null }>())?.instance_id ?? null;
    await expect.poll(async () => (await Promise.all(ids.map(servedBy))).filter((s) => s !== null).length).toBe(10);
    const served = (await Promise.all(ids.map(servedBy))).map((s) => (s === instanceOf("miner-a") ? "slow" : s === instanceOf("miner-b") ? "fast" : s));
    expect(served[0]).toBe("slow");
    // The slow request's report reaches the router with the next handover note; from its answer on, the slot goes back.
    expect(served.filter((s) => s === "slow").length).toBeLessThanOrEqual(3);
    expect(served.slice(3)).toEqual(Array(7).fill("fast"));
  });

  it("the router names the instances that lag (slower than the fastest, or failing) so that their slots are not handed over", async () => {
    const chute = "chute-lagging";
    const router = await routerOf(gw, chute);
    await router.register("miner-x", [{ instanceId: "fast", maxConcurrency: 4 }, { instanceId: "slow", maxConcurrency: 4 }, { instanceId: "flaky", maxConcurrency: 4 }], chute);
    const leaseOn = async (instanceId: string) => {
      const l = await router.acquire({ chute, avoid: ["fast", "slow", "flaky"].filter((i) => i !== instanceId), waitMs: 0, prefixes: [], weight: 1 });
      if (!l.ok) throw new Error(`no lease: ${l.code}`);
      return l;
    };
    const [f, s, k] = [await leaseOn("fast"), await leaseOn("slow"), await leaseOn("flaky")];
    // Nothing is known of anyone's speed yet: no instance lags.
    expect(f).toMatchObject({ ok: true, roomy: true });
    expect(k).not.toHaveProperty("lagging");
    const answer = await router.releaseMany([
      { leaseId: f.leaseId, report: { result: "ok", ttftMs: 5, tokens: 100, streamMs: 100 } }, // 1,000 tokens/s
      { leaseId: s.leaseId, report: { result: "ok", ttftMs: 5, tokens: 100, streamMs: 1_000 } }, // 100 tokens/s
      { leaseId: k.leaseId, report: { result: "failed" } },
    ]);
    expect(answer.roomy).toBe(true);
    expect(answer.lagging?.slice().sort()).toEqual(["flaky", "slow"]);
  });

  it("a handover note that reaches the router after its lease's release still counts the request and its report", async () => {
    // The router on its own (a chute of no miner), driven as an isolate with two calls in flight would.
    const router = await routerOf(gw, "chute-handover-order");
    await router.register("miner-x", [{ instanceId: "inst-x", maxConcurrency: 4 }], "chute-handover-order");
    const lease = await router.acquire({ chute: "chute-handover-order", avoid: [], waitMs: 0, prefixes: [], weight: 1 });
    if (!lease.ok) throw new Error(`no lease: ${lease.code}`);
    const ok = { result: "ok" as const, ttftMs: 5, tokens: 10, streamMs: 100 };
    // The request the slot was handed to ended, and its release overtook the note of the handover.
    await router.releaseMany([{ leaseId: lease.leaseId, report: ok }]);
    await router.releaseMany([{ leaseId: lease.leaseId, report: ok, handedOver: { prefixes: [], instanceId: lease.instanceId } }]);
    const snap = await routerSnapshot(gw, "chute-handover-order");
    expect(snap.stats.requests).toBe(2); // the acquire's request and the handed-over one
    expect(snap.handovers).toBe(1);
    expect(snap.instances).toEqual([expect.objectContaining({ instanceId: "inst-x", inflight: 0, health: expect.objectContaining({ served: 2 }) })]);
  });
});

/**
 * A slot waits to go back (for a request to take it over) only when it could be taken over: the
 * router says the chute has room, and its request went well. Here such a slot would wait 3 s.
 */
describe("slots that cannot be handed over go back at once", () => {
  let full: Gateway;
  const agents = new UpstreamAgents(() => full);
  beforeAll(async () => {
    full = await startGateway({ seed: makeSeed({ minerNames: ["miner-a"] }), vars: { QUEUE_WAIT_MS: "10000", SLOT_RELEASE_DELAY_MS: "3000" } });
  });
  afterEach(() => agents.stopAgents());
  afterAll(async () => {
    await agents.close();
    await full?.close();
  });

  it("goes back at once, not after the wait kept for handovers: the request queued for it is served", async () => {
    await agents.start("miner-a", { delayPerTokenMs: 20 }, 1);
    await waitForInstances(full, TINY_CHUTE.id, 1);
    const c = new OpenAI({ baseURL: full.baseURL, apiKey: full.seed.apiKey, maxRetries: 0 });
    const ask = async (maxTokens: number) => {
      await c.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: maxTokens });
      return Date.now();
    };
    const snapshot = () => routerSnapshot(full, TINY_CHUTE.id);
    const meanwhile = { interval: 20, timeout: 10_000 };
    // The first request holds the only slot for about 2 s; the second queues at the router meanwhile.
    const first = ask(100);
    await expect.poll(async () => (await snapshot()).instances[0]?.inflight, meanwhile).toBe(1);
    const second = ask(2);
    await expect.poll(async () => (await snapshot()).waiting, meanwhile).toBe(1);
    const [firstEnded, secondEnded] = await Promise.all([first, second]);
    // The second generates for about 40 ms; the slot kept for a handover would add 3 s.
    expect(secondEnded - firstEnded).toBeLessThan(1500);
    const snap = await snapshot();
    expect(snap.handovers).toBe(0);
    expect(snap.stats.requests).toBe(2);
  });

  it("a failed request's slot goes back at once on a chute with room, and the router hears of the failure", async () => {
    // Two tokens, then the upstream's answer breaks off: the engine fails after its first token (nothing to retry).
    await agents.start("miner-a", { endAfterTokens: 2 }, 4);
    await waitForInstances(full, TINY_CHUTE.id, 1);
    const c = new OpenAI({ baseURL: full.baseURL, apiKey: full.seed.apiKey, maxRetries: 0 });
    const stream = await c.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true });
    await expect((async () => {
      for await (const chunk of stream) void chunk;
    })()).rejects.toThrow(/ended before finishing/);
    // Kept for a handover (which a failed request's slot never gets) it would stay busy for 3 s.
    const soon = { interval: 20, timeout: 1_500 };
    await expect.poll(async () => (await routerSnapshot(full, TINY_CHUTE.id)).instances[0]?.inflight, soon).toBe(0);
    expect((await routerSnapshot(full, TINY_CHUTE.id)).instances[0]!.health.consecutiveFailures).toBe(1);
  });
});
