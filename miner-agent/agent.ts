import { choiceCount, type DeploySpec, type GatewayFrame, type Gpu, type Hotkey, type InstanceAnnouncement } from "../protocol/index.ts";
import { deployableEngines, type ResolvedConfig } from "./config.ts";
import { GatewayConnection } from "./connection.ts";
import { decideOffer } from "./deploy.ts";
import { createEngine, type EngineConfig } from "./engines/index.ts";
import { detectGpus } from "./gpus.ts";
import { loadHotkey } from "./hotkey.ts";
import { JobRunner, type ServedInstance } from "./job-runner.ts";
import { log } from "./log.ts";
import { writeStatusFile, type AgentStatus } from "./status.ts";

interface Instance extends ServedInstance {
  /** Launched on a deploy offer. */
  managed: boolean;
  gpus: number[];
  /** Withdrawn from the gateway (undeploy): no new jobs are routed to it. */
  draining: boolean;
  /** Its engine is closed (or closing): jobs are refused. */
  closed: boolean;
}

interface Deploying {
  offerId: string;
  chute: string;
  gpus: number[];
  since: number;
}

const STATUS_EVERY_MS = 2_000;
/**
 * After an instance is withdrawn (drain, undeploy), jobs the gateway sent before it heard may
 * still arrive: they are served, and the engine is kept at least this long for them.
 */
const STRAGGLER_GRACE_MS = 1_000;

/**
 * The miner agent: runs one engine per served chute instance (configured ones, plus those
 * launched on the scaler's deploy offers), takes jobs from the gateway, and drains on SIGTERM.
 */
export class MinerAgent {
  private readonly instances = new Map<string, Instance>();
  private readonly deploying = new Map<string, Deploying>();
  private draining = false;
  private conn: GatewayConnection | null = null;
  private readonly runner = new JobRunner(
    (frame) => this.conn?.send(frame) ?? false,
    () => this.conn?.bufferedAmount ?? 0,
  );
  private hotkey: Hotkey | null = null;
  private gpus: Gpu[] = [];
  private readonly startedAt = new Date();
  private statusTimer: NodeJS.Timeout | null = null;
  private statusFailing = false;

  constructor(private readonly config: ResolvedConfig) {}

  /** Load the hotkey and every configured engine, then connect. */
  async start(): Promise<void> {
    const hotkey = await loadHotkey(this.config.hotkeyFile);
    this.hotkey = hotkey;
    this.gpus = this.config.gpus === "auto" ? await detectGpus() : this.config.gpus;
    log.info("agent.starting", { hotkey: hotkey.address, gpus: this.gpus.length, offers: deployableEngines(this.config) });
    for (const inst of this.config.instances) {
      const instanceId = inst.instanceId ?? `${hotkey.address}:${inst.chute}`;
      await this.launch(instanceId, inst.chute, inst.engine, inst.gpus, false);
    }
    const engines = deployableEngines(this.config);
    this.conn = new GatewayConnection({
      gateway: this.config.gateway,
      hotkey,
      gpus: this.gpus,
      ...(engines.length ? { offers: { engines } } : {}),
      heartbeatMs: this.config.heartbeatMs,
      onReady: () => {
        this.announce();
        this.writeStatus();
      },
      onFrame: (frame) => this.onFrame(frame),
      onLost: () => {
        // A draining agent has nothing to come back for: its jobs end with the connection.
        if (this.draining) this.conn?.stopReconnecting();
        this.runner.abortAll("gateway connection lost");
        this.writeStatus();
      },
    });
    this.conn.start();
    this.statusTimer = setInterval(() => this.writeStatus(), STATUS_EVERY_MS);
    this.statusTimer.unref();
    this.writeStatus();
  }

  /** Stop taking work, finish in-flight jobs (up to the drain timeout), then disconnect. */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    log.info("agent.draining", { inflight: this.runner.inflight });
    this.conn?.send({ type: "capacity", instances: [] });
    this.writeStatus();
    const deadline = Date.now() + this.config.drainTimeoutMs;
    await sleep(STRAGGLER_GRACE_MS);
    while (this.runner.inflight > 0 && Date.now() < deadline) await sleep(50);
    this.runner.abortAll("drain timeout");
    await this.conn?.stop();
    if (this.statusTimer) clearInterval(this.statusTimer);
    for (const inst of this.instances.values()) {
      inst.closed = true;
      await inst.engine.close();
    }
    await this.flushStatus();
    log.info("agent.stopped", {});
  }

  private async launch(instanceId: string, chute: string, config: EngineConfig, gpus: number[], managed: boolean): Promise<void> {
    const t0 = Date.now();
    const engine = await createEngine(config);
    const instance: Instance = { chute, instanceId, engine, active: 0, managed, gpus, draining: false, closed: false, requestsServed: 0, tokensServed: 0 };
    this.instances.set(instanceId, instance);
    // An engine process that dies on its own takes its instance out of service (and frees its GPUs).
    void engine.exited?.then(() => {
      if (this.instances.get(instanceId) !== instance || instance.draining || this.draining) return;
      this.instances.delete(instanceId);
      log.error("instance.lost", { chute, instanceId, reason: "the engine process exited", managed });
      this.announce();
      this.writeStatus();
    });
    log.info("engine.ready", { chute, instanceId, kind: engine.kind, capacity: engine.capacity, managed, loadMs: Date.now() - t0 });
  }

  private announce(): void {
    const instances: InstanceAnnouncement[] = this.draining
      ? []
      : [...this.instances.values()]
          .filter((i) => !i.draining)
          .map((i) => ({
            instanceId: i.instanceId,
            chute: i.chute,
            maxConcurrency: i.engine.capacity,
            ...(i.managed ? { managed: true } : {}),
            ...(i.gpus.length ? { gpus: i.gpus } : {}),
          }));
    this.conn?.send({ type: "capacity", instances });
  }

  private onFrame(frame: Extract<GatewayFrame, { type: "job" | "cancel" | "deploy" | "undeploy" }>): void {
    switch (frame.type) {
      case "cancel":
        return this.runner.cancel(frame.id);
      case "deploy":
        return void this.onDeploy(frame.offerId, frame.spec);
      case "undeploy":
        return void this.undeploy(frame.instanceId, frame.reason);
      case "job": {
        const inst = this.instances.get(frame.instanceId);
        // A withdrawn (draining) instance still serves jobs sent before the gateway heard of it.
        if (!inst || inst.closed) {
          log.warn("job.refused", { id: frame.id, instanceId: frame.instanceId, reason: "instance not served" });
          this.conn?.send({ type: "error", id: frame.id, code: "no_capacity", message: "Instance not served here.", retryable: true });
          return;
        }
        // A job with several choices takes a slot for each.
        if (inst.active + choiceCount(frame.spec) > inst.engine.capacity || this.runner.has(frame.id)) {
          this.conn?.send({ type: "error", id: frame.id, code: "capacity_exceeded", message: "Instance is full.", retryable: true });
          return;
        }
        void this.runner.run(inst, frame.id, frame.spec, frame.traceId);
      }
    }
  }

  /** GPUs in use by instances or reserved by launches in progress. */
  private usedGpus(): Set<number> {
    const used = new Set<number>();
    for (const i of this.instances.values()) i.gpus.forEach((g) => used.add(g));
    for (const d of this.deploying.values()) d.gpus.forEach((g) => used.add(g));
    return used;
  }

  /** A deploy offer: accept or decline at once, then launch, health-check and announce. */
  private async onDeploy(offerId: string, spec: DeploySpec): Promise<void> {
    const reply = (status: "accepted" | "declined" | "ready" | "failed", extra: { instanceId?: string; message?: string } = {}) =>
      this.conn?.send({ type: "deploy_status", offerId, status, ...extra });
    const managed = [...this.instances.values()].filter((i) => i.managed).length + this.deploying.size;
    let decline: string | null = null;
    if (this.draining) decline = "the agent is draining";
    else if (!this.config.deploy) decline = "the agent takes no deploy offers";
    else if (managed >= this.config.deploy.maxInstances) decline = `already running ${managed} offered instance(s), the configured maximum`;
    else if (this.deploying.has(offerId)) decline = "offer already taken";
    const decision = decline ? null : await decideOffer(spec, this.config.deploy?.engines, this.gpus, this.usedGpus());
    if (decision && !decision.ok) decline = decision.reason;
    // The GPUs may have been taken by another offer while the model file was checked.
    if (decision?.ok && decision.gpus.some((g) => this.usedGpus().has(g))) decline = "GPUs were taken meanwhile";
    if (decline || !decision?.ok || !this.hotkey) {
      log.info("deploy.declined", { offerId, chute: spec.chute, reason: decline });
      reply("declined", { message: decline ?? "not ready" });
      return;
    }
    const instanceId = `${this.hotkey.address}:${offerId}`;
    this.deploying.set(offerId, { offerId, chute: spec.chute, gpus: decision.gpus, since: Date.now() });
    reply("accepted", { instanceId });
    log.info("deploy.accepted", { offerId, chute: spec.chute, instanceId, engine: decision.engine.kind, gpus: decision.gpus });
    this.writeStatus();
    try {
      await this.launch(instanceId, spec.chute, decision.engine, decision.gpus, true);
      this.deploying.delete(offerId);
      if (this.draining) {
        await this.instances.get(instanceId)?.engine.close();
        this.instances.delete(instanceId);
        reply("failed", { instanceId, message: "the agent began draining during the launch" });
        return;
      }
      // Announced first, so the gateway routes to it by the time it hears the launch is over.
      this.announce();
      reply("ready", { instanceId });
    } catch (err) {
      this.deploying.delete(offerId);
      const message = err instanceof Error ? err.message : String(err);
      log.error("deploy.failed", { offerId, chute: spec.chute, error: message });
      reply("failed", { instanceId, message: message.slice(0, 1000) });
    }
    this.writeStatus();
  }

  /** Stop announcing the instance, let its in-flight jobs finish, then free its engine and GPUs. */
  private async undeploy(instanceId: string, reason: string): Promise<void> {
    const inst = this.instances.get(instanceId);
    if (!inst || inst.draining) return;
    inst.draining = true;
    log.info("undeploy.draining", { instanceId, chute: inst.chute, reason, inflight: inst.active });
    this.announce();
    const deadline = Date.now() + this.config.drainTimeoutMs;
    await sleep(STRAGGLER_GRACE_MS);
    while (inst.active > 0 && Date.now() < deadline) await sleep(50);
    inst.closed = true;
    await inst.engine.close();
    this.instances.delete(instanceId);
    log.info("undeploy.done", { instanceId, chute: inst.chute });
    this.writeStatus();
  }

  private status(): AgentStatus {
    const instances = [...this.instances.values()].map((i) => ({
      instanceId: i.instanceId,
      chute: i.chute,
      engine: i.engine.kind,
      managed: i.managed,
      capacity: i.engine.capacity,
      inflight: i.active,
      draining: i.draining,
      gpus: i.gpus,
      requestsServed: i.requestsServed,
      tokensServed: i.tokensServed,
    }));
    return {
      pid: process.pid,
      hotkey: this.hotkey?.address ?? "",
      gateway: this.config.gateway,
      connected: this.conn?.isReady ?? false,
      draining: this.draining,
      startedAt: this.startedAt.toISOString(),
      updatedAt: new Date().toISOString(),
      gpus: this.gpus,
      instances,
      deploying: [...this.deploying.values()].map((d) => ({ offerId: d.offerId, chute: d.chute, since: new Date(d.since).toISOString() })),
      inflight: this.runner.inflight,
      requestsServed: instances.reduce((n, i) => n + i.requestsServed, 0),
      tokensServed: instances.reduce((n, i) => n + i.tokensServed, 0),
    };
  }

  private writeStatus(): void {
    void this.flushStatus();
  }

  /** Write the status file now; a failure is logged once (e.g. its directory is gone), never thrown. */
  private async flushStatus(): Promise<void> {
    try {
      await writeStatusFile(this.config.statusFile, this.status());
      this.statusFailing = false;
    } catch (err) {
      if (!this.statusFailing) log.warn("status.write_failed", { path: this.config.statusFile, error: String(err) });
      this.statusFailing = true;
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
