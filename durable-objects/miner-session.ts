import { DurableObject } from "cloudflare:workers";
import { and, inArray, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import {
  CloseCode,
  PROTOCOL_VERSION,
  parseAgentFrame,
  type AgentFrame,
  type DeploySpec,
  type GatewayFrame,
  type InstanceAnnouncement,
} from "../protocol/index.ts";
import { chutes } from "../worker/db/schema.ts";
import { numberVar } from "../worker/env.ts";
import { log } from "../worker/log.ts";
import { stubByName } from "../worker/runtime/object-ids.ts";
import type { JobEventSink, JobStart } from "./job-events.ts";
import { clearSession, recordSession, verifyAgentAuth } from "./miner-auth.ts";
import { OfferBook } from "./offer-book.ts";
import { FrameBatch } from "./frame-batch.ts";
import { failedStart, SessionJobs, type StartJob } from "./session-jobs.ts";
import type { OfferReply } from "./scaler-types.ts";

/**
 * One per connected miner agent: terminates the agent's WebSocket (hibernation API),
 * authenticates it, registers the instances it announces with each chute's router, and
 * multiplexes jobs over the one socket by id. `startJob` answers the Worker with a job's first
 * events, and pushes the rest to the job's sink (the Worker's reader) when there are more.
 */

interface Attachment {
  state: "challenged" | "ready";
  minerId: string;
  nonce: string;
  sessionId: string;
  connectedAt: number;
  instances: InstanceAnnouncement[];
  /** The agent takes several frames per message, one per line (its auth said so). */
  lines?: boolean;
}

/** An agent must authenticate within this time after connecting; its nonce is stale after it. */
const AUTH_TIMEOUT_MS = 10_000;
/** An agent silent this long (no frame, no heartbeat) is evicted, unless MINER_STALE_AFTER_MS says otherwise. */
const DEFAULT_STALE_AFTER_MS = 35_000;
const HEARTBEAT_PING = JSON.stringify({ type: "ping", t: 0 });
const HEARTBEAT_PONG = JSON.stringify({ type: "pong", t: 0 });

export class MinerSession extends DurableObject<Env> {
  private readonly jobs = new SessionJobs((id, sessionId) => this.stopOnAgent(id, sessionId));
  /** When each session last sent a frame (heartbeats answered by auto-response are tracked by the runtime). */
  private readonly lastFrameAt = new Map<string, number>();
  private readonly offers = new OfferBook();
  private readonly out = new FrameBatch();
  /** The ready socket readySocket() found last (memory only: gone when the object hibernates). */
  private lastReady: WebSocket | undefined;
  /** The latest capacity announcement being registered with the routers. */
  private announcing: Promise<void> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Heartbeats are answered without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
  }

  /** The agent's WebSocket upgrade, forwarded by the Worker. */
  override async fetch(request: Request): Promise<Response> {
    const minerId = new URL(request.url).searchParams.get("miner") ?? "";
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    const attachment: Attachment = {
      state: "challenged",
      minerId,
      nonce: crypto.randomUUID(),
      sessionId: crypto.randomUUID(),
      connectedAt: Date.now(),
      instances: [],
    };
    setAttachment(server, attachment);
    this.send(server, { type: "challenge", v: PROTOCOL_VERSION, nonce: attachment.nonce, lines: true });
    await this.ctx.storage.setAlarm(Date.now() + AUTH_TIMEOUT_MS);
    return new Response(null, { status: 101, webSocket: client });
  }

  /**
   * Send a job to the agent. Answers once the job has sent its first event (and, with `holdMs`,
   * the events of that long after it, or up to its end), or ended: the events so far, and
   * whether more follow on `job.sink`. A job whose first event has not come by its
   * `deadline` is stopped on the agent and answered with an `upstream_timeout` error event.
   */
  async startJob(job: StartJob): Promise<JobStart> {
    const ws = this.readySocket();
    const att = ws ? attachmentOf(ws) : null;
    if (!ws || !att) return failedStart("miner_disconnected", "The miner is not connected.");
    if (!att.instances.some((i) => i.instanceId === job.instanceId)) {
      return failedStart("miner_disconnected", "The miner no longer serves this instance.");
    }
    const sink = job.sink ? ownCopy(job.sink) : undefined;
    return this.jobs.start(job, att.sessionId, (frame) => this.out.add(ws, frame, att.lines === true), sink);
  }

  /** Push the rest of a job answered without a sink (more to come) to `sink`. */
  followJob(id: string, sink: JobEventSink): void {
    this.jobs.follow(id, ownCopy(sink));
  }

  /** The client went away: tell the agent to stop generating and end the job's events. Idempotent. */
  cancelJob(id: string): void {
    this.jobs.cancel(id);
  }

  /** Tell the agent to stop a job, if the session it ran on is still the connected one. */
  private stopOnAgent(id: string, sessionId: string): void {
    const ws = this.readySocket();
    if (ws && attachmentOf(ws)?.sessionId === sessionId) this.send(ws, { type: "cancel", id });
  }

  /** Whether an authenticated agent is connected, and what it serves. */
  info(): { connected: boolean; instances: InstanceAnnouncement[] } {
    const ws = this.readySocket();
    return { connected: ws !== undefined, instances: (ws && attachmentOf(ws)?.instances) || [] };
  }

  /**
   * Offer the agent a new instance of a chute (from the chute's scaler). Resolves with its
   * answer: accepted (it is launching; the instance id is final), declined, or no answer.
   */
  async offer(offerId: string, chuteId: string, spec: DeploySpec): Promise<OfferReply> {
    const ws = this.readySocket();
    if (!ws) return { status: "unavailable", message: "The miner is not connected." };
    const reply = this.offers.wait(offerId, chuteId);
    this.send(ws, { type: "deploy", offerId, spec });
    return reply;
  }

  /** Ask the agent to drain and stop an instance (scale-down, chute deleted). False when not connected. */
  undeploy(instanceId: string, reason: string): boolean {
    const ws = this.readySocket();
    if (!ws) return false;
    this.send(ws, { type: "undeploy", instanceId, reason });
    return true;
  }

  /** Disconnect the agent (its hotkey was banned or deregistered). */
  evict(reason: string): void {
    for (const ws of this.ctx.getWebSockets()) this.closeSession(ws, CloseCode.authFailed, reason);
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      const att = attachmentOf(ws);
      if (!att) return ws.close(CloseCode.protocolError, "no session");
      this.lastFrameAt.set(att.sessionId, Date.now());
      if (att.state === "challenged") {
        const parsed = parseAgentFrame(message);
        if (!parsed.ok) return this.malformed(ws, att, parsed.error);
        return await this.authenticate(ws, att, parsed.frame);
      }
      // Several frames sent together, one per line (see the challenge's `lines`).
      const texts = typeof message === "string" && message.includes("\n") ? message.split("\n") : [message];
      try {
        for (const text of texts) {
          const parsed = parseAgentFrame(text);
          if (!parsed.ok) return this.malformed(ws, att, parsed.error);
          await this.onFrame(ws, att, parsed.frame, text);
          if (attachmentOf(ws)?.sessionId !== att.sessionId || attachmentOf(ws)?.state !== "ready") return; // the session ended meanwhile
        }
      } finally {
        this.jobs.messageRead();
      }
    } catch (err) {
      log.error("miner.message_failed", { component: "MinerSession", error: String(err) });
      this.closeSession(ws, CloseCode.protocolError, "internal error");
    }
  }

  private malformed(ws: WebSocket, att: Attachment, error: string): void {
    log.warn("miner.frame_invalid", { component: "MinerSession", minerId: att.minerId, error });
    this.closeSession(ws, CloseCode.protocolError, "malformed frame");
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    try {
      const att = attachmentOf(ws);
      log.info("miner.disconnected", { component: "MinerSession", minerId: att?.minerId, code, reason });
      this.endSession(ws);
      ws.close(code === 1005 || code === 1006 ? CloseCode.normal : code, "closed");
    } catch (err) {
      log.error("miner.close_failed", { component: "MinerSession", error: String(err) });
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    try {
      log.warn("miner.socket_error", { component: "MinerSession", error: String(error) });
      this.endSession(ws);
    } catch (err) {
      log.error("miner.error_failed", { component: "MinerSession", error: String(err) });
    }
  }

  /**
   * Close sockets that never authenticated, and evict agents that went silent: a stalled or
   * half-dead agent's jobs are failed cleanly and its instances withdrawn from routing, instead
   * of waiting for TCP to notice. Re-armed while any socket is open.
   */
  override async alarm(): Promise<void> {
    const now = Date.now();
    const staleAfter = numberVar(this.env.MINER_STALE_AFTER_MS, DEFAULT_STALE_AFTER_MS);
    let next = Infinity;
    for (const ws of this.ctx.getWebSockets()) {
      const att = attachmentOf(ws);
      if (!att) continue;
      if (att.state === "challenged") {
        if (now - att.connectedAt >= AUTH_TIMEOUT_MS) ws.close(CloseCode.authFailed, "authentication timed out");
        else next = Math.min(next, att.connectedAt + AUTH_TIMEOUT_MS);
        continue;
      }
      const heard = Math.max(
        att.connectedAt,
        this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0,
        this.lastFrameAt.get(att.sessionId) ?? 0,
      );
      if (now - heard >= staleAfter) {
        log.warn("miner.stale", { component: "MinerSession", minerId: att.minerId, silentMs: now - heard });
        this.closeSession(ws, CloseCode.stale, "no heartbeat");
      } else {
        next = Math.min(next, heard + staleAfter);
      }
    }
    if (next !== Infinity) await this.ctx.storage.setAlarm(next);
  }

  private async authenticate(ws: WebSocket, att: Attachment, frame: AgentFrame): Promise<void> {
    if (frame.type !== "auth") return ws.close(CloseCode.policyViolation, "expected auth");
    if (frame.v !== PROTOCOL_VERSION) {
      return ws.close(CloseCode.versionMismatch, `protocol version ${PROTOCOL_VERSION} required`);
    }
    const verdict = await verifyAgentAuth(this.env.DB, { minerId: att.minerId, nonce: att.nonce, issuedAt: att.connectedAt }, frame, AUTH_TIMEOUT_MS);
    if (!verdict.ok) {
      log.warn("miner.auth_failed", { component: "MinerSession", minerId: att.minerId, reason: verdict.reason });
      return ws.close(CloseCode.authFailed, `authentication failed: ${verdict.reason}`);
    }
    // The socket may have been closed (auth timeout) while the registry was read.
    const current = attachmentOf(ws);
    if (!current || current.state !== "challenged" || current.nonce !== att.nonce) return;
    // A new connection from the same miner replaces the old one.
    for (const other of this.ctx.getWebSockets()) {
      if (other !== ws && attachmentOf(other)?.state === "ready") {
        this.closeSession(other, CloseCode.replaced, "replaced by a new connection");
      }
    }
    // The nonce is spent: a second auth frame on this socket is refused as "already authenticated".
    const ready: Attachment = { ...att, state: "ready", nonce: "", ...(frame.lines ? { lines: true } : {}) };
    setAttachment(ws, ready);
    this.send(ws, { type: "welcome", minerId: att.minerId, sessionId: att.sessionId });
    log.info("miner.connected", { component: "MinerSession", minerId: att.minerId, gpus: frame.gpus.length, offers: frame.offers?.engines ?? [] });
    this.lastFrameAt.set(att.sessionId, Date.now());
    const checkAt = Date.now() + numberVar(this.env.MINER_STALE_AFTER_MS, DEFAULT_STALE_AFTER_MS);
    const armed = await this.ctx.storage.getAlarm();
    if (armed === null || armed > checkAt) await this.ctx.storage.setAlarm(checkAt);
    await recordSession(this.env.DB, att.minerId, att.sessionId, frame);
  }

  private async onFrame(ws: WebSocket, att: Attachment, frame: AgentFrame, raw: string | ArrayBuffer): Promise<void> {
    switch (frame.type) {
      case "capacity":
        this.announcing = this.announce(ws, att, frame.instances);
        return this.announcing;
      case "chunk":
      case "done":
      case "error":
        return this.jobs.deliver(att.sessionId, frame, raw);
      case "deploy_status":
        return this.onDeployStatus(att, frame);
      case "ping":
        return this.send(ws, { type: "pong", t: frame.t });
      case "pong":
        return;
      case "auth":
        return this.closeSession(ws, CloseCode.policyViolation, "already authenticated");
    }
  }

  private onDeployStatus(att: Attachment, frame: Extract<AgentFrame, { type: "deploy_status" }>): void {
    log.info("miner.deploy_status", { component: "MinerSession", minerId: att.minerId, offerId: frame.offerId, status: frame.status, message: frame.message });
    const ended = this.offers.report(frame);
    if (!ended) return;
    // The scaler stops counting the launch as pending: it is up, or it failed. The agent
    // announced the instance before saying so; once that is registered, the router lists it.
    const told = this.announcing.catch(() => undefined).then(() => this.scaler(ended.chuteId).deployEnded(frame.offerId, ended.ready, ended.message));
    this.ctx.waitUntil(told);
  }

  /** Register the announced instances with their chutes' routers (chutes named as clients name them). */
  private async announce(ws: WebSocket, att: Attachment, announced: InstanceAnnouncement[]): Promise<void> {
    const names = [...new Set(announced.map((i) => i.chute))];
    const known = names.length
      ? await drizzle(this.env.DB)
          .select({ id: chutes.id, name: chutes.name, concurrency: chutes.concurrency })
          .from(chutes)
          .where(and(inArray(chutes.name, names), isNull(chutes.deletedAt)))
      : [];
    const byName = new Map(known.map((c) => [c.name, c]));
    const concurrency = new Map(known.map((c) => [c.id, c.concurrency]));
    const instances: InstanceAnnouncement[] = [];
    for (const inst of announced) {
      const chute = byName.get(inst.chute);
      // The router caps what the agent announced by the chute's concurrency (which may change).
      if (chute) instances.push({ ...inst, chute: chute.id });
      else log.warn("miner.unknown_chute", { component: "MinerSession", minerId: att.minerId, chute: inst.chute });
    }
    const current = attachmentOf(ws);
    if (current?.sessionId !== att.sessionId || current.state !== "ready") return; // closed meanwhile
    setAttachment(ws, { ...current, instances });
    const affected = new Set([...current.instances, ...instances].map((i) => i.chute));
    await Promise.all(
      [...affected].map((chute) =>
        this.router(chute).register(
          att.minerId,
          instances
            .filter((i) => i.chute === chute)
            .map((i) => ({ instanceId: i.instanceId, maxConcurrency: i.maxConcurrency, managed: i.managed === true })),
          chute,
          concurrency.get(chute),
        ),
      ),
    );
    log.info("miner.capacity", { component: "MinerSession", minerId: att.minerId, instances: instances.length });
  }

  /** Fail this socket's jobs and withdraw its instances from the routers. */
  private endSession(ws: WebSocket): void {
    const att = attachmentOf(ws);
    if (!att || att.state !== "ready") return;
    this.jobs.failSession(att.sessionId);
    for (const chute of new Set(att.instances.map((i) => i.chute))) {
      this.ctx.waitUntil(this.router(chute).register(att.minerId, [], chute));
    }
    this.ctx.waitUntil(clearSession(this.env.DB, att.minerId, att.sessionId));
    this.out.drop(ws);
    setAttachment(ws, { ...att, state: "challenged", instances: [] });
  }

  private closeSession(ws: WebSocket, code: number, reason: string): void {
    this.endSession(ws);
    ws.close(code, reason);
  }

  /** Send a frame at once (after the socket's batched job frames). */
  private send(ws: WebSocket, frame: GatewayFrame): void {
    this.out.now(ws, JSON.stringify(frame));
  }

  /**
   * The authenticated agent's socket. The one found last is kept and re-checked at each use (a
   * scan of getWebSockets() per job cost the most of startJob's own time when requests came one
   * by one); a scan again when it is no longer open and ready.
   */
  private readySocket(): WebSocket | undefined {
    const last = this.lastReady;
    if (last && last.readyState === WebSocket.OPEN && attachmentOf(last)?.state === "ready") return last;
    return (this.lastReady = this.ctx.getWebSockets().find((ws) => attachmentOf(ws)?.state === "ready"));
  }

  private router(chute: string) {
    return stubByName(this.env.CHUTE_ROUTER, chute);
  }

  private scaler(chute: string) {
    return stubByName(this.env.CHUTE_SCALER, chute);
  }
}

/** A stub received as a parameter goes with the call's end: the session keeps its own copy. */
function ownCopy(sink: JobEventSink): Rpc.Stub<JobEventSink> {
  return (sink as Rpc.Stub<JobEventSink>).dup();
}

/**
 * Attachments are read on every frame: keep a copy per socket in memory (deserializing on each
 * frame was a per-token cost), falling back to the stored one after the object hibernated.
 */
const attachments = new WeakMap<WebSocket, Attachment>();

function attachmentOf(ws: WebSocket): Attachment | null {
  const cached = attachments.get(ws);
  if (cached) return cached;
  const stored = (ws.deserializeAttachment() as Attachment | null) ?? null;
  if (stored) attachments.set(ws, stored);
  return stored;
}

function setAttachment(ws: WebSocket, a: Attachment): void {
  ws.serializeAttachment(a);
  attachments.set(ws, a);
}
