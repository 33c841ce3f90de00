import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { SignJWT } from "jose";
import OpenAI from "openai";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signNonce, type GatewayFrame } from "../../protocol/index.ts";
import { makeSeed, minerNamed, newMiner, TINY_CHUTE, type SeedMiner } from "../../scripts/lib/seed.ts";
import { fixtureMiner } from "../fixtures/metagraph-sn64.ts";
import { adminCli } from "../support/processes.ts";
import { spawnAgent, startAgent, tinyEngine, type AgentLog, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, TEST_SECRETS, type Gateway } from "../support/gateway.ts";
import { authFrame, hotkeyOf, signedHeaders } from "../support/hotkeys.ts";
import { ROOT } from "../support/paths.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";

/**
 * Miner identity on the real Worker: sr25519 hotkeys answer the connect challenge, the registry
 * in D1 decides who may connect, the operator bans, unbans and imports metagraph snapshots, and
 * a miner's earnings are read with a signed request. Real agents where they behave; raw
 * WebSocket clients where a test needs one to misbehave.
 */
const FIXTURE_FILE = `${ROOT}/test/fixtures/metagraph-sn64.json`;
let gw: Gateway;
let client: OpenAI;
const agents: AgentProcess[] = [];
const sockets: WebSocket[] = [];
let alice: SeedMiner, bob: SeedMiner, carol: SeedMiner, dave: SeedMiner, erin: SeedMiner, frank: SeedMiner;
let carolAgent: AgentProcess;
/** Opened first, never answered: the auth window runs out while the other tests run. */
let silent: RawAgent;

interface RawAgent {
  ws: WebSocket;
  challenge: Promise<string>;
  welcomed: Promise<boolean>;
  closed: Promise<{ code: number; reason: string }>;
}

/** A raw WebSocket client on the agent endpoint for `miner`; answers nothing by itself. */
function rawAgent(miner: SeedMiner): RawAgent {
  const ws = new WebSocket(`${gw.url.replace(/^http/, "ws")}/v1/miners/connect?miner=${encodeURIComponent(miner.id)}`);
  sockets.push(ws);
  ws.on("error", () => {});
  let challenged: (nonce: string) => void = () => {};
  let welcomed: (yes: boolean) => void = () => {};
  const agent: RawAgent = {
    ws,
    challenge: new Promise((resolve) => (challenged = resolve)),
    welcomed: new Promise((resolve) => (welcomed = resolve)),
    closed: new Promise((resolve) =>
      ws.on("close", (code, reason) => {
        welcomed(false);
        resolve({ code, reason: reason.toString() });
      }),
    ),
  };
  ws.on("message", (data) => {
    const frame = JSON.parse(String(data)) as GatewayFrame;
    if (frame.type === "challenge") challenged(frame.nonce);
    if (frame.type === "welcome") welcomed(true);
  });
  return agent;
}

function adminToken(): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("identity-test")
    .setAudience("sluice-admin")
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(TEST_SECRETS.ADMIN_JWT_SECRET));
}

type Body = Record<string, unknown> & { error?: { message: string; code: string; param: string | null } };

async function admin(method: string, path: string, body?: unknown, auth = true): Promise<{ status: number; body: Body }> {
  const res = await fetch(`${gw.baseURL}/admin${path}`, {
    method,
    headers: { ...(auth ? { authorization: `Bearer ${await adminToken()}` } : {}), ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Body };
}

const cli = (args: string[]) => adminCli(gw.url, args);

const ask = (content: string) => client.chat.completions.create({ model: TINY_CHUTE.name, messages: [{ role: "user", content }], max_tokens: 4 });
const closedWith = (agent: AgentProcess, code: number, reason: string, after = 0) => (l: AgentLog) =>
  l.event === "gateway.closed" && l.code === code && l.reason === reason && agent.logs.indexOf(l) >= after;
const refusedFor = (reason: string) => (l: AgentLog) => l.event === "gateway.auth_refused" && l.reason === `authentication failed: ${reason}`;
const connections = (agent: AgentProcess) => agent.logs.filter((l) => l.event === "gateway.connected").length;

async function registryRow(hotkey: string) {
  const list = await admin("GET", "/miners");
  return (list.body.data as Record<string, unknown>[]).find((m) => m.hotkey === hotkey);
}

beforeAll(async () => {
  gw = await startGateway({ seed: makeSeed({ minerNames: ["alice", "bob", "carol", "dave", "erin", "frank"] }) });
  [alice, bob, carol, dave, erin, frank] = ["alice", "bob", "carol", "dave", "erin", "frank"].map((n) => minerNamed(gw.seed, n)) as [SeedMiner, SeedMiner, SeedMiner, SeedMiner, SeedMiner, SeedMiner];
  silent = rawAgent(erin);
  const started = await Promise.all([alice, bob, carol].map((miner) => startAgent({ gateway: gw.url, miner, engine: tinyEngine(2) })));
  agents.push(...started);
  carolAgent = started[2]!;
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterAll(async () => {
  for (const a of agents) a.kill();
  for (const ws of sockets) ws.terminate();
  await gw?.close();
});

describe("connecting with a hotkey", () => {
  it("three agents with three hotkeys connect, and all of them serve", async () => {
    await waitForInstances(gw, TINY_CHUTE.id, 3);
    const before = await routerSnapshot(gw, TINY_CHUTE.id);
    expect(new Set(before.instances.map((i) => i.minerId))).toEqual(new Set([alice.id, bob.id, carol.id]));
    // Nine at once on six slots (two per instance): the least loaded instance takes each.
    const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => ask(`question number ${i}`)));
    expect(answers.every((a) => a.usage?.completion_tokens === 4)).toBe(true);
    const after = await routerSnapshot(gw, TINY_CHUTE.id);
    for (const inst of after.instances) expect(inst.health.served, inst.minerId).toBeGreaterThan(0);
    // Invocations are recorded after the response (with its settle, batched).
    const minersRecorded = async () => new Set((await gw.db.prepare("SELECT DISTINCT miner_id FROM invocations").all<{ miner_id: string }>()).results.map((r) => r.miner_id));
    await expect.poll(minersRecorded).toEqual(new Set([alice.id, bob.id, carol.id]));
    // The registry shows who is connected, and what each reported.
    expect(await registryRow(alice.id)).toMatchObject({ status: "active", source: "admin", connected: true, gpus: [] });
    expect(await registryRow(dave.id)).toMatchObject({ status: "active", connected: false, last_seen_at: null });
  });

  it("refuses a forged signature: another key's, or the right key's with a byte flipped", async () => {
    const otherKey = rawAgent(dave);
    otherKey.ws.send(authFrame({ ...dave, secretSeed: randomBytes(32).toString("hex") }, await otherKey.challenge));
    expect(await otherKey.closed).toEqual({ code: 4001, reason: "authentication failed: bad signature" });

    const flipped = rawAgent(dave);
    const frame = JSON.parse(authFrame(dave, await flipped.challenge)) as { credential: { signature: string } };
    const sig = frame.credential.signature;
    frame.credential.signature = (parseInt(sig.slice(0, 2), 16) ^ 1).toString(16).padStart(2, "0") + sig.slice(2);
    flipped.ws.send(JSON.stringify(frame));
    expect(await flipped.closed).toEqual({ code: 4001, reason: "authentication failed: bad signature" });
  });

  it("refuses a replayed answer: a recorded auth frame sent on a connection with another nonce", async () => {
    const first = rawAgent(dave);
    const recorded = authFrame(dave, await first.challenge);
    first.ws.send(recorded);
    expect(await first.welcomed).toBe(true);
    const second = rawAgent(dave);
    expect(await second.challenge).not.toBe(await first.challenge);
    second.ws.send(recorded);
    expect(await second.closed).toEqual({ code: 4001, reason: "authentication failed: replayed nonce" });
    // The refused replay did not disturb the real connection.
    expect(first.ws.readyState).toBe(WebSocket.OPEN);
    first.ws.close(1000, "done");
    expect((await first.closed).code).toBe(1000);
  });

  it("refuses an unregistered hotkey and a banned one; both agents keep retrying with backoff", async () => {
    const ban = await admin("POST", `/miners/${frank.id}/ban`, { reason: "known bad actor" });
    expect(ban).toMatchObject({ status: 200, body: { hotkey: frank.id, status: "banned", reason: "known bad actor" } });
    const intruder = await spawnAgent({ gateway: gw.url, miner: newMiner("mallory"), noChutes: true });
    const banned = await spawnAgent({ gateway: gw.url, miner: frank, noChutes: true });
    agents.push(intruder, banned);
    for (const [agent, reason] of [
      [intruder, "not registered"],
      [banned, "banned"],
    ] as const) {
      await agent.waitFor((l) => l.event === "gateway.reconnecting" && l.attempt === 2, 10_000);
      await expect.poll(() => agent.logs.filter(refusedFor(reason)).length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
      expect(agent.logs.filter((l) => l.event === "gateway.closed").every((l) => l.code === 4001)).toBe(true);
      expect(connections(agent)).toBe(0);
      const delays = agent.logs.filter((l) => l.event === "gateway.reconnecting").map((l) => l.inMs as number);
      expect(delays[1]).toBeGreaterThanOrEqual(delays[0]!);
      agent.kill();
    }
    expect(gw.logs.some((l) => l.event === "miner.auth_failed" && l.reason === "not registered")).toBe(true);
  });
});

describe("banning and unbanning", () => {
  it("banning a connected miner disconnects it at once and takes its instance out of the router", async () => {
    const since = carolAgent.logs.length;
    const t0 = Date.now();
    const ban = await admin("POST", `/miners/${carol.id}/ban`, {});
    expect(ban).toMatchObject({ status: 200, body: { status: "banned", connected: false } });
    await carolAgent.waitFor(closedWith(carolAgent, 4001, "banned", since), 5_000);
    expect(Date.now() - t0).toBeLessThan(3_000);
    await waitForInstances(gw, TINY_CHUTE.id, 2);
    // Its reconnection is refused; the others serve on.
    await carolAgent.waitFor(refusedFor("banned"), 10_000);
    expect((await ask("still there?")).usage?.completion_tokens).toBe(4);
    expect(await registryRow(carol.id)).toMatchObject({ status: "banned", connected: false });
  });

  it("after an unban the agent reconnects by itself and serves again", async () => {
    expect(connections(carolAgent)).toBe(1);
    const unban = await admin("POST", `/miners/${carol.id}/unban`);
    expect(unban).toMatchObject({ status: 200, body: { status: "active", changed: true } });
    await expect.poll(() => connections(carolAgent), { timeout: 20_000 }).toBe(2);
    await waitForInstances(gw, TINY_CHUTE.id, 3);
    expect((await admin("POST", `/miners/${carol.id}/unban`)).body).toMatchObject({ status: "active", changed: false });
  });

  it("validates hotkeys, refuses unknown miners, needs the admin token, and adds idempotently", async () => {
    expect((await admin("GET", "/miners", undefined, false)).status).toBe(401);
    const bad = await admin("POST", "/miners", { hotkey: alice.id.slice(0, -1) + (alice.id.endsWith("x") ? "y" : "x") });
    expect(bad).toMatchObject({ status: 400, body: { error: { code: "invalid_request", param: "hotkey" } } });
    expect((await admin("POST", "/miners/not-a-hotkey/ban")).body.error).toMatchObject({ param: "hotkey" });
    const stranger = newMiner("stranger");
    expect((await admin("POST", `/miners/${stranger.id}/ban`)).status).toBe(404);
    const added = await admin("POST", "/miners", { hotkey: stranger.id, name: "stranger" });
    expect(added).toMatchObject({ status: 201, body: { hotkey: stranger.id, name: "stranger", source: "admin", status: "active", created: true } });
    expect(await admin("POST", "/miners", { hotkey: stranger.id })).toMatchObject({ status: 200, body: { name: "stranger", created: false } });
    // A banned miner stays banned when added again.
    expect(await admin("POST", "/miners", { hotkey: frank.id })).toMatchObject({ status: 200, body: { status: "banned" } });
    const banned = await admin("GET", "/miners?status=banned");
    expect((banned.body.data as { hotkey: string }[]).map((m) => m.hotkey)).toEqual([frank.id]);
  });
});

describe("metagraph snapshots", () => {
  const fixture = () => JSON.parse(readFileSync(FIXTURE_FILE, "utf8")) as { neurons: { uid: number; hotkey: string }[] };

  it("the CLI imports a snapshot file; its neurons can connect; importing it again changes nothing", async () => {
    const out = await cli(["miners", "import", "--file", FIXTURE_FILE]);
    expect(out.stderr).not.toMatch(/error/);
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ object: "metagraph.import", netuid: 64, added: 8, updated: 0, deregistered: 0, unchanged: 0 });
    const again = await admin("POST", "/miners/import", fixture());
    expect(again.body).toMatchObject({ added: 0, unchanged: 8 });
    const neuron = await startAgent({ gateway: gw.url, miner: fixtureMiner(1), noChutes: true });
    agents.push(neuron);
    expect(await registryRow(fixtureMiner(1).id)).toMatchObject({ source: "metagraph", uid: 1, status: "active", connected: true });
    const listed = await cli(["miners", "list", "--source", "metagraph"]);
    expect((JSON.parse(listed.stdout) as { data: unknown[] }).data).toHaveLength(8);
  });

  it("a snapshot without a miner deregisters and disconnects it; bans and hand-added miners are kept", async () => {
    const neuron = agents.at(-1)!;
    await admin("POST", `/miners/${fixtureMiner(2).id}/ban`);
    const next = fixture();
    next.neurons = next.neurons.filter((n) => n.uid !== 1 && n.uid !== 2);
    const dry = await admin("POST", "/miners/import?dry_run=true", next);
    expect(dry.body).toMatchObject({ dry_run: true, deregistered: 1, banned_kept: 1, unchanged: 6 });
    expect(await registryRow(fixtureMiner(1).id)).toMatchObject({ status: "active", connected: true });

    const since = neuron.logs.length;
    const applied = await admin("POST", "/miners/import", next);
    expect(applied.body).toMatchObject({ dry_run: false, added: 0, updated: 0, deregistered: 1, unchanged: 6, banned_kept: 1, hotkeys: { deregistered: [fixtureMiner(1).id] } });
    await neuron.waitFor(closedWith(neuron, 4001, "deregistered", since), 5_000);
    await neuron.waitFor(refusedFor("deregistered"), 10_000);
    neuron.kill();
    expect(await registryRow(fixtureMiner(1).id)).toMatchObject({ status: "deregistered", uid: null });
    expect(await registryRow(fixtureMiner(2).id)).toMatchObject({ status: "banned", uid: null });
    // The seeded (operator-added) miners were not in the snapshot and still serve.
    expect(await registryRow(alice.id)).toMatchObject({ status: "active", connected: true });
    await waitForInstances(gw, TINY_CHUTE.id, 3);
    // An unbanned miner that left the metagraph while banned comes back deregistered.
    expect((await admin("POST", `/miners/${fixtureMiner(2).id}/unban`)).body).toMatchObject({ status: "deregistered" });
    // The operator may take a deregistered miner over: it is then theirs, and imports leave it alone.
    const adopted = await cli(["miners", "add", "--hotkey", fixtureMiner(2).id, "--name", "adopted"]);
    expect(JSON.parse(adopted.stdout)).toMatchObject({ status: "active", source: "admin", name: "adopted", created: false });
    expect((await admin("POST", "/miners/import", next)).body).toMatchObject({ deregistered: 0, unchanged: 6 });
    expect(await registryRow(fixtureMiner(2).id)).toMatchObject({ status: "active", source: "admin" });
  });

  it("refuses an invalid snapshot with the field named, and changes nothing", async () => {
    const broken = fixture();
    broken.neurons[3]!.hotkey = "5" + broken.neurons[3]!.hotkey.slice(1, -2) + "zz";
    const res = await admin("POST", "/miners/import", broken);
    expect(res).toMatchObject({ status: 400, body: { error: { code: "invalid_request", param: "neurons[3].hotkey" } } });
    const dupe = fixture();
    dupe.neurons[4]!.uid = 0;
    expect((await admin("POST", "/miners/import", dupe)).body.error).toMatchObject({ param: "neurons[4].uid" });
    expect(await registryRow(fixtureMiner(1).id)).toMatchObject({ status: "deregistered" });
  });
});

describe("earnings signed by the hotkey", () => {
  const earnings = (miner: SeedMiner, headers: Record<string, string>) => fetch(`${gw.baseURL}/miners/${miner.id}/earnings`, { headers });
  const refusal = async (res: Response) => {
    expect(res.status).toBe(401);
    const body = (await res.json()) as Body;
    expect(body.error).toMatchObject({ code: "invalid_api_key" });
    return body.error!.message;
  };
  const signedAt = (miner: SeedMiner, ms: number) => {
    const nonce = `${ms}.${randomBytes(8).toString("hex")}`;
    return { "x-sluice-hotkey": miner.id, "x-sluice-nonce": nonce, "x-sluice-signature": signNonce(hotkeyOf(miner), nonce, "earnings") };
  };

  it("answers a fresh signed request once: the same nonce again is a replay", async () => {
    const headers = signedHeaders(alice);
    const first = await earnings(alice, headers);
    expect(first.status).toBe(200);
    expect(await first.json()).toMatchObject({ object: "miner.earnings", miner_id: alice.id });
    expect(await refusal(await earnings(alice, headers))).toMatch(/replayed nonce/);
  });

  it("refuses stale and future timestamps, another miner's or purpose's signature, unsigned and unknown hotkeys", async () => {
    expect(await refusal(await earnings(alice, signedAt(alice, Date.now() - 120_000)))).toMatch(/stale nonce/);
    expect(await refusal(await earnings(alice, signedAt(alice, Date.now() + 120_000)))).toMatch(/stale nonce/);
    expect(await refusal(await earnings(alice, signedHeaders(bob)))).toMatch(/wrong miner/);
    const connectSig = signedHeaders(alice);
    connectSig["x-sluice-signature"] = signNonce(hotkeyOf(alice), connectSig["x-sluice-nonce"]!, "connect");
    expect(await refusal(await earnings(alice, connectSig))).toMatch(/bad signature/);
    expect(await refusal(await earnings(alice, {}))).toMatch(/unsigned/);
    const stranger = newMiner("nobody");
    expect(await refusal(await earnings(stranger, signedHeaders(stranger)))).toMatch(/not registered/);
    expect(await refusal(await earnings(alice, { ...signedHeaders(alice), "x-sluice-nonce": "12345" }))).toMatch(/malformed nonce/);
  });

  it("a banned miner may still read what it earned", async () => {
    expect((await earnings(frank, signedHeaders(frank))).status).toBe(200);
  });
});

describe("the connect challenge's window", () => {
  it("an agent that never answers its nonce is closed when the window ends (10 s), never welcomed", async () => {
    await silent.challenge;
    expect(await silent.closed).toEqual({ code: 4001, reason: "authentication timed out" });
    expect(await silent.welcomed).toBe(false);
    // Answering the old nonce on a new connection is a replay, not a way in.
    const late = rawAgent(erin);
    await late.challenge;
    late.ws.send(authFrame(erin, await silent.challenge));
    expect(await late.closed).toEqual({ code: 4001, reason: "authentication failed: replayed nonce" });
  });
});
