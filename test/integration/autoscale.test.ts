import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScalerState } from "../../durable-objects/scaler-types.ts";
import { makeSeed, minerNamed, type SeedChute } from "../../scripts/lib/seed.ts";
import { startAgent, type AgentLog, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { pidAlive } from "../support/processes.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { vllmDoubleCommand } from "../support/vllm-double.ts";

/**
 * Autoscaling end to end: a chute with no instance, two agents that take deploy offers (one
 * with two RTX 4090s, one whose only GPU is too small). Demand makes the chute's scaler offer
 * instances to the agent whose GPUs fit; the agent launches the engine as a process (the vLLM
 * test double through a `command` template), health-checks it and announces it; traffic flows
 * to it. More load adds a second instance; idleness removes them, one at a time, and the
 * engine processes exit.
 */
const SCALED: SeedChute = {
  id: "chute-scaled",
  name: "acme/scaled",
  modelRef: "acme/scaled-model",
  engine: "vllm",
  contextLength: 4096,
  maxOutputTokens: 512,
  promptPriceNanoPerM: 100_000_000,
  completionPriceNanoPerM: 400_000_000,
  concurrency: 2,
  minInstances: 0,
  maxInstances: 2,
  gpu: { count: 1, minVramMb: 20_000, types: ["4090"] },
};

/** A chute whose engine cannot start on this miner (its command exits at once). */
const BROKEN: SeedChute = { ...SCALED, id: "chute-broken", name: "acme/broken", engine: "sglang", gpu: { count: 0, minVramMb: 0, types: [] } };

let gw: Gateway;
let big: AgentProcess;
let small: AgentProcess;

const deployVllm = {
  maxInstances: 4,
  engines: {
    vllm: { command: vllmDoubleCommand(["--delay-per-token-ms", "25"]), healthPath: "/health", startupTimeoutMs: 30_000 },
    sglang: { command: `${process.execPath} -e process.exit(3)`, healthPath: "/health", startupTimeoutMs: 30_000 },
  },
};

async function chat(maxTokens: number, model = SCALED.name): Promise<{ status: number; text?: string }> {
  const res = await fetch(`${gw.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], max_tokens: maxTokens }),
  });
  const body = (await res.json()) as { choices?: { message: { content: string } }[] };
  return { status: res.status, text: body.choices?.[0]?.message.content };
}

async function scalerState(chuteId = SCALED.id): Promise<ScalerState> {
  const ns = await gw.mf.getDurableObjectNamespace("CHUTE_SCALER");
  const stub = ns.get(ns.idFromName(chuteId)) as unknown as { state(): Promise<ScalerState> };
  return JSON.parse(JSON.stringify(await stub.state())) as ScalerState;
}

const events = (agent: AgentProcess, event: string): AgentLog[] => agent.logs.filter((l) => l.event === event);

beforeAll(async () => {
  gw = await startGateway({
    seed: makeSeed({ chutes: [SCALED, BROKEN], minerNames: ["miner-big", "miner-small"], creditUsd: 20 }),
    vars: {
      SCALER_TICK_MS: "250",
      SCALER_SHORT_WINDOW_MS: "1500",
      SCALER_LONG_WINDOW_MS: "4000",
      SCALER_COOLDOWN_MS: "2500",
      DEPLOY_TIMEOUT_MS: "30000",
      QUEUE_WAIT_MS: "200",
      RATE_LIMIT_RPM: "0",
    },
  });
  const gpu = (index: number, name: string, vramMb: number) => ({ index, name, vramMb });
  big = await startAgent({
    gateway: gw.url,
    miner: minerNamed(gw.seed, "miner-big"),
    noChutes: true,
    gpus: [gpu(0, "NVIDIA GeForce RTX 4090", 24_564), gpu(1, "NVIDIA GeForce RTX 4090", 24_564)],
    deploy: deployVllm,
  });
  small = await startAgent({
    gateway: gw.url,
    miner: minerNamed(gw.seed, "miner-small"),
    noChutes: true,
    gpus: [gpu(0, "Tesla T4", 15_360)],
    deploy: deployVllm,
  });
}, 60_000);
afterAll(async () => {
  big?.kill("SIGTERM");
  small?.kill("SIGTERM");
  await Promise.all([big?.exited, small?.exited]);
  await gw?.close();
});

describe("autoscaling with deploy offers", () => {
  it("demand with no instance launches one on the miner whose GPUs fit, and traffic flows to it", async () => {
    // Nothing serves the chute yet: the first request is refused, and wakes the scaler.
    expect((await chat(3)).status).toBe(503);
    await waitForInstances(gw, SCALED.id, 1, 30_000);
    const accepted = events(big, "deploy.accepted");
    expect(accepted).toHaveLength(1);
    expect(accepted[0]).toMatchObject({ chute: SCALED.name, engine: "command", gpus: [0] });
    // The engine is a separate process, up and health-checked before the instance was announced.
    const ready = events(big, "engine.ready");
    expect(ready).toHaveLength(1);
    expect(ready[0]).toMatchObject({ managed: true, kind: "command" });
    expect(events(small, "deploy.accepted")).toHaveLength(0);

    const answer = await chat(3);
    expect(answer).toEqual({ status: 200, text: "tok0 tok1 tok2" });
    // Rows are written in batches, shortly after the response.
    const row = () => gw.db.prepare("SELECT miner_id, instance_id FROM invocations WHERE outcome = 'ok'").first<{ miner_id: string; instance_id: string }>();
    await expect.poll(row).toEqual({ miner_id: big.logs.find((l) => l.event === "agent.starting")!.hotkey, instance_id: accepted[0]!.instanceId });
  });

  it("scales up under load (to the chute's maximum), and down when idle, one instance at a time", async () => {
    // Six clients on one instance of two slots: requests wait and are refused, the scaler adds one.
    const results: number[] = [];
    let stop = false;
    const client = async () => {
      while (!stop) results.push((await chat(16)).status);
    };
    const clients = Array.from({ length: 6 }, client);
    await waitForInstances(gw, SCALED.id, 2, 30_000);
    const state = await scalerState();
    expect(state.lastScaleUpAt).not.toBeNull();
    // Keep the load on a little: the chute's maximum is 2, so no third instance is launched.
    await new Promise((r) => setTimeout(r, 2_000));
    stop = true;
    await Promise.all(clients);
    expect(events(big, "deploy.accepted")).toHaveLength(2);
    expect(events(big, "deploy.accepted").map((l) => l.gpus)).toEqual([[0], [1]]);
    expect((await routerSnapshot(gw, SCALED.id)).instances).toHaveLength(2);
    expect(results.filter((s) => s === 200).length).toBeGreaterThan(10);
    // What was not served was refused cleanly (429 while full), never a failure.
    expect(results.every((s) => s === 200 || s === 429)).toBe(true);
    // The small GPU never qualified: it was never offered the chute.
    expect(events(small, "deploy.accepted")).toHaveLength(0);
    expect(events(small, "deploy.declined")).toHaveLength(0);

    // Idle: after the long window and a cool-down, one instance goes, then the other.
    const pids = events(big, "engine.healthy").map((l) => l.pid as number);
    await waitForInstances(gw, SCALED.id, 1, 20_000);
    const firstDown = Date.now();
    await waitForInstances(gw, SCALED.id, 0, 20_000);
    expect(Date.now() - firstDown).toBeGreaterThanOrEqual(2_000); // the cool-down between the two
    await expect.poll(() => events(big, "undeploy.done").length, { timeout: 15_000 }).toBe(2);
    // The engine processes were stopped.
    expect(pids).toHaveLength(2);
    await expect.poll(() => pids.filter(pidAlive).length, { timeout: 15_000 }).toBe(0);
  });

  it("a launch that fails is reported, and the miner is not asked again at once", async () => {
    expect((await chat(3, BROKEN.name)).status).toBe(503);
    const failed = await big.waitFor((l) => l.event === "deploy.failed" && l.chute === BROKEN.name, 15_000);
    expect(failed.error).toMatch(/exit/i);
    // Demand goes on; the scaler backs off from this miner (30 s at first) instead of relaunching every tick.
    for (let i = 0; i < 8; i++) {
      expect((await chat(3, BROKEN.name)).status).toBe(503);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(big.logs.filter((l) => l.event === "deploy.accepted" && l.chute === BROKEN.name)).toHaveLength(1);
    expect((await scalerState(BROKEN.id)).pending).toEqual([]);
  });

  it("an engine process that dies takes its instance out of service; demand launches a new one", async () => {
    expect((await chat(3)).status).toBe(503);
    await waitForInstances(gw, SCALED.id, 1, 30_000);
    const healthy = events(big, "engine.healthy");
    const pid = healthy.at(-1)!.pid as number;
    const instanceId = (await routerSnapshot(gw, SCALED.id)).instances[0]!.instanceId;
    process.kill(pid, "SIGKILL");
    const lost = await big.waitFor((l) => l.event === "instance.lost" && l.instanceId === instanceId, 10_000);
    expect(lost.managed).toBe(true);
    await waitForInstances(gw, SCALED.id, 0, 5_000);
    // The next demand launches a fresh engine (a new process) on the freed GPU.
    expect((await chat(3)).status).toBe(503);
    await waitForInstances(gw, SCALED.id, 1, 30_000);
    expect(events(big, "engine.healthy").length).toBe(healthy.length + 1);
    expect(await chat(3)).toEqual({ status: 200, text: "tok0 tok1 tok2" });
  });
});
