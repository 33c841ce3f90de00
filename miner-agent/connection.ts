import WebSocket from "ws";
import {
  CloseCode,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  parseGatewayFrame,
  signNonce,
  type AgentFrame,
  type ChuteEngineKind,
  type GatewayFrame,
  type Gpu,
  type Hotkey,
} from "../protocol/index.ts";
import { log } from "./log.ts";

export interface ConnectionOptions {
  gateway: string;
  hotkey: Hotkey;
  /** Reported with every authentication. */
  gpus: Gpu[];
  /** Engines the agent launches deploy offers with; absent = it takes no offers. */
  offers?: { engines: ChuteEngineKind[] };
  /** Called after the gateway accepted the agent (on every reconnect). */
  onReady: () => void;
  onFrame: (frame: Extract<GatewayFrame, { type: "job" | "cancel" | "deploy" | "undeploy" }>) => void;
  /** Called when an authenticated connection is lost; in-flight jobs are gone with it. */
  onLost: () => void;
  /** Heartbeat interval; default 10 s. */
  heartbeatMs?: number;
}

const HEARTBEAT_MS = 10_000;
/** No frame at all from the gateway for this many heartbeats: the connection is presumed dead. */
const DEAD_AFTER_HEARTBEATS = 3;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 15_000;
const HEARTBEAT = JSON.stringify({ type: "ping", t: 0 });

/**
 * The agent's outbound WebSocket to the gateway: challenge/response authentication,
 * heartbeats, and reconnection with jittered exponential backoff.
 */
export class GatewayConnection {
  private ws: WebSocket | null = null;
  private ready = false;
  private stopped = false;
  private failures = 0;
  private lastSeen = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  /** The gateway takes several frames per message, one per line (its challenge said so). */
  private lines = false;
  /** Frames sent in this turn of the event loop, to go out as one message. */
  private batch: string[] = [];
  private batchBytes = 0;

  constructor(private readonly opts: ConnectionOptions) {}

  get isReady(): boolean {
    return this.ready;
  }

  /** Bytes queued on the socket, not yet sent. */
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  /**
   * Send a frame; false when not connected. Frames are bounded in size. Once authenticated with a
   * gateway that takes them, the frames of one turn of the event loop go out as one message (one
   * per line, the message bounded like a frame): a job's last chunk and its end, or chunks of
   * several jobs, cost the gateway one message.
   */
  send(frame: AgentFrame): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(frame);
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_FRAME_BYTES) {
      log.error("frame.too_large", { type: frame.type, bytes });
      return false;
    }
    if (!this.ready || !this.lines) {
      this.ws.send(text);
      return true;
    }
    if (this.batchBytes + bytes + 1 > MAX_FRAME_BYTES) this.flushBatch();
    if (this.batch.length === 0) setImmediate(() => this.flushBatch());
    this.batch.push(text);
    this.batchBytes += bytes + 1;
    return true;
  }

  private flushBatch(): void {
    if (this.batch.length === 0) return;
    const text = this.batch.join("\n");
    this.batch = [];
    this.batchBytes = 0;
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** Do not reconnect when this connection is lost (the agent is on its way out). */
  stopReconnecting(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.flushBatch();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2_000);
      ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.close(CloseCode.goingAway, "agent stopping");
    });
  }

  private connect(): void {
    const url = new URL("/v1/miners/connect", this.opts.gateway);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("miner", this.opts.hotkey.address);
    // No permessage-deflate: compressing every token frame cost more CPU than anything else
    // per frame, on both ends (the frames are small, and the link to the gateway is not the limit).
    const ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, handshakeTimeout: 10_000, perMessageDeflate: false });
    this.ws = ws;
    this.lastSeen = Date.now();
    ws.on("open", () => log.info("gateway.open", { url: url.origin }));
    ws.on("message", (data, isBinary) => this.onMessage(ws, isBinary ? "" : data.toString()));
    ws.on("error", (err) => log.warn("gateway.error", { error: err.message }));
    ws.on("close", (code, reason) => this.onClose(ws, code, reason.toString()));
  }

  private onMessage(ws: WebSocket, text: string): void {
    this.lastSeen = Date.now();
    // Once authenticated, the gateway may send several frames in one message, one per line (our auth said `lines`).
    const frames = this.ready && text.includes("\n") ? text.split("\n") : [text];
    for (const frame of frames) {
      if (!this.onFrame(ws, frame)) return;
    }
  }

  /** One frame from the gateway; false when it was malformed (the connection is closing). */
  private onFrame(ws: WebSocket, text: string): boolean {
    const parsed = parseGatewayFrame(text);
    if (!parsed.ok) {
      log.error("gateway.frame_invalid", { error: parsed.error });
      ws.close(CloseCode.protocolError, "malformed frame");
      return false;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case "challenge":
        if (frame.v !== PROTOCOL_VERSION) {
          log.error("gateway.version_mismatch", { gateway: frame.v, agent: PROTOCOL_VERSION });
          ws.close(CloseCode.versionMismatch, "protocol version mismatch");
          return false;
        }
        this.lines = frame.lines === true;
        this.send({
          type: "auth",
          v: PROTOCOL_VERSION,
          minerId: this.opts.hotkey.address,
          nonce: frame.nonce,
          credential: { type: "sr25519", signature: signNonce(this.opts.hotkey, frame.nonce, "connect") },
          gpus: this.opts.gpus,
          ...(this.opts.offers ? { offers: this.opts.offers } : {}),
          lines: true,
        });
        return true;
      case "welcome":
        this.ready = true;
        this.failures = 0;
        this.startHeartbeat(ws);
        log.info("gateway.connected", { minerId: frame.minerId, sessionId: frame.sessionId });
        this.opts.onReady();
        return true;
      case "ping":
        this.send({ type: "pong", t: frame.t });
        return true;
      case "pong":
        return true;
      case "job":
      case "cancel":
      case "deploy":
      case "undeploy":
        this.opts.onFrame(frame);
    }
    return true;
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) return;
    const wasReady = this.ready;
    this.ready = false;
    this.ws = null;
    this.batch = []; // the lost session's frames go with it
    this.batchBytes = 0;
    if (this.heartbeat) clearInterval(this.heartbeat);
    log.warn("gateway.closed", { code, reason });
    if (code === CloseCode.authFailed) {
      log.error("gateway.auth_refused", { hotkey: this.opts.hotkey.address, reason, hint: "is this hotkey registered with the gateway, and not banned?" });
    }
    if (wasReady) this.opts.onLost();
    if (this.stopped) return;
    if (code === CloseCode.versionMismatch) {
      log.error("gateway.giving_up", { reason: "protocol version mismatch" });
      return;
    }
    this.failures++;
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(this.failures, 10));
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    log.info("gateway.reconnecting", { inMs: delay, attempt: this.failures });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private startHeartbeat(ws: WebSocket): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    const every = this.opts.heartbeatMs ?? HEARTBEAT_MS;
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastSeen > every * DEAD_AFTER_HEARTBEATS) {
        log.warn("gateway.unresponsive", { silentMs: Date.now() - this.lastSeen });
        ws.terminate();
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(HEARTBEAT);
    }, every);
    this.heartbeat.unref();
  }
}
