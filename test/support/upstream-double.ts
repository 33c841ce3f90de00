/**
 * Test double of an OpenAI-compatible inference server (stands in for vLLM / SGLang /
 * llama-server). Streams deterministic text "tok0 tok1 tok2 ..." (one token per SSE chunk)
 * and has knobs for fault injection. With no delays set it writes as fast as the socket allows,
 * so benchmarks can use it as a synthetic upstream.
 */
import { EventEmitter, once } from "node:events";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { z } from "zod";

export interface UpstreamBehaviour {
  /** Tokens to produce; default: the request's max_tokens, else 16 (never more than max_tokens). */
  tokens?: number;
  /** Wait before the response headers and the first token (simulated prefill). */
  delayBeforeFirstTokenMs?: number;
  /** Wait between tokens. */
  delayPerTokenMs?: number;
  /** Never answer (no headers) until the client disconnects or the double closes. */
  stallBeforeFirstToken?: boolean;
  /** Send this many tokens, then hang until the client disconnects or the double closes. */
  stallAfterTokens?: number;
  /** Send this many tokens, then end the response without finishing it (no finish_reason, no [DONE]). */
  endAfterTokens?: number;
  /** Answer with this HTTP status and an OpenAI-style error body. */
  failWithStatus?: number;
  /** Message of the error body for `failWithStatus`. */
  failMessage?: string;
  /** Send one bad chunk first, then `[DONE]`: true/"shape" = valid JSON of the wrong shape, "json" = not JSON. */
  malformed?: boolean | "shape" | "json";
  /** Leave out the usage chunk even when the request asked for it. */
  omitUsage?: boolean;
  /** Report this usage instead of the true counts (a dishonest server). */
  claimUsage?: { prompt_tokens: number; completion_tokens: number };
  /** Report this many prompt tokens as served from the prefix cache (prompt_tokens_details). */
  cachedTokens?: number;
}

export interface UpstreamDoubleOptions extends UpstreamBehaviour {
  /** Model id served by GET /v1/models and echoed in chunks; default "double-model". */
  model?: string;
  /** Port to listen on (127.0.0.1); default: a free one. */
  port?: number;
}

const RequestBody = z.looseObject({
  model: z.string().optional(),
  messages: z.array(z.looseObject({ role: z.string(), content: z.string() })).min(1).optional(),
  prompt: z.string().optional(),
  max_tokens: z.int().positive().optional(),
  stream: z.boolean().optional(),
  stream_options: z.looseObject({ include_usage: z.boolean().optional() }).nullish(),
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  temperature: z.number().optional(),
  top_p: z.number().optional(),
  seed: z.int().optional(),
});
export type UpstreamRequestBody = z.infer<typeof RequestBody>;

export interface ReceivedRequest {
  path: string;
  headers: IncomingHttpHeaders;
  body: UpstreamRequestBody;
}

export interface ClientClosedEvent {
  request: ReceivedRequest;
  /** Tokens written before the client went away. */
  tokensSent: number;
}

export interface UpstreamDoubleEvents {
  request: [ReceivedRequest];
  "client-closed": [ClientClosedEvent];
  finished: [ReceivedRequest];
}

export interface UpstreamDouble {
  /** Base URL ending in /v1, e.g. http://127.0.0.1:41234/v1. */
  readonly url: string;
  /** Every valid POST body received, in order. */
  readonly requests: ReceivedRequest[];
  /** Current behaviour; read at the start of each request. */
  readonly behaviour: UpstreamBehaviour;
  /** Replace the behaviour knobs (merged into the current ones; pass `undefined` to clear one). */
  set(changes: Partial<UpstreamBehaviour>): void;
  /** Back to the behaviour given at start (or to `behaviour`), and forget received requests. */
  reset(behaviour?: UpstreamBehaviour): void;
  /** Open TCP connections. */
  activeConnections(): number;
  /** TCP connections accepted since start (keep-alive reuse keeps this low). */
  totalConnections(): number;
  /** Requests being answered right now. */
  activeRequests(): number;
  readonly events: EventEmitter<UpstreamDoubleEvents>;
  /** Ends stalled responses, drops connections and stops listening. */
  close(): Promise<void>;
}

const FLUSH_BYTES = 16 * 1024;

interface Stream {
  res: ServerResponse;
  received: ReceivedRequest;
  behaviour: UpstreamBehaviour;
  /** Aborted when the client disconnects or the double closes. */
  signal: AbortSignal;
  model: string;
  id: string;
  created: number;
  tokensSent: number;
}

function tokenText(i: number): string {
  return i === 0 ? "tok0" : ` tok${i}`;
}

function promptTokens(body: UpstreamRequestBody): number {
  const text = body.messages ? body.messages.map((m) => m.content).join(" ") : (body.prompt ?? "");
  return text.split(/\s+/).filter(Boolean).length + (body.messages ? 3 * body.messages.length : 0);
}

/** Plans the output: the token pieces to send and the finish reason. */
function plan(body: UpstreamRequestBody, behaviour: UpstreamBehaviour): { pieces: string[]; finish: "stop" | "length" } {
  const max = body.max_tokens ?? Number.POSITIVE_INFINITY;
  const n = Math.min(behaviour.tokens ?? body.max_tokens ?? 16, max);
  const stops = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  const pieces: string[] = [];
  let text = "";
  for (let i = 0; i < n; i++) {
    const piece = tokenText(i);
    // The stop string can only newly appear in the tail of the text plus this piece.
    if (stops.some((s) => (text.slice(-s.length) + piece).includes(s))) return { pieces, finish: "stop" };
    pieces.push(piece);
    if (stops.length > 0) text += piece;
  }
  return { pieces, finish: n >= max ? "length" : "stop" };
}

function isChat(s: Stream): boolean {
  return s.received.path.endsWith("/chat/completions");
}

function chunk(s: Stream, choice: Record<string, unknown> | null, usage?: Record<string, unknown>): string {
  const object = isChat(s) ? "chat.completion.chunk" : "text_completion";
  const body = { id: s.id, object, created: s.created, model: s.model, choices: choice ? [{ index: 0, ...choice }] : [], ...(usage ? { usage } : {}) };
  return `data: ${JSON.stringify(body)}\n\n`;
}

function tokenChunk(s: Stream, piece: string): string {
  return chunk(s, isChat(s) ? { delta: { content: piece }, finish_reason: null } : { text: piece, finish_reason: null });
}

function usageOf(s: Stream, completion: number): Record<string, unknown> {
  const claim = s.behaviour.claimUsage;
  const cached = s.behaviour.cachedTokens === undefined ? {} : { prompt_tokens_details: { cached_tokens: s.behaviour.cachedTokens } };
  if (claim) return { ...claim, total_tokens: claim.prompt_tokens + claim.completion_tokens, ...cached };
  const prompt = promptTokens(s.received.body);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, ...cached };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: { message, type: status >= 500 ? "server_error" : "invalid_request_error", param: null, code: status } });
}

/** Writes honouring backpressure; false when the client went away. */
async function write(s: Stream, text: string): Promise<boolean> {
  if (s.signal.aborted) return false;
  if (s.res.write(text)) return true;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      s.res.off("drain", done).off("close", done);
      resolve();
    };
    s.res.on("drain", done).on("close", done);
  });
  return !s.signal.aborted;
}

async function pause(s: Stream, ms: number | undefined): Promise<boolean> {
  if (ms && ms > 0) await sleep(ms, undefined, { signal: s.signal }).catch(() => undefined);
  return !s.signal.aborted;
}

async function hang(s: Stream): Promise<void> {
  if (!s.signal.aborted) await once(s.signal, "abort");
}

async function streamResponse(s: Stream): Promise<void> {
  const { behaviour: b } = s;
  const { pieces, finish } = plan(s.received.body, b);
  s.res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  if (b.malformed) {
    const bad = b.malformed === "json" ? "data: {\"choices\": [{\"delta\"\n\n" : "data: {\"choices\":\"surprise\"}\n\n";
    s.res.end(`${bad}data: [DONE]\n\n`);
    return;
  }
  let buffer = isChat(s) ? chunk(s, { delta: { role: "assistant", content: "" }, finish_reason: null }) : "";
  const flush = async (): Promise<boolean> => {
    const text = buffer;
    buffer = "";
    return text === "" || write(s, text);
  };
  for (const [i, piece] of pieces.entries()) {
    if (i === b.stallAfterTokens) {
      await flush();
      return hang(s);
    }
    if (i === b.endAfterTokens) {
      await flush();
      return void s.res.end();
    }
    if (i > 0 && b.delayPerTokenMs && !(await pause(s, b.delayPerTokenMs))) return;
    buffer += tokenChunk(s, piece);
    s.tokensSent++;
    if ((b.delayPerTokenMs || buffer.length >= FLUSH_BYTES) && !(await flush())) return;
  }
  if (b.stallAfterTokens !== undefined && b.stallAfterTokens >= pieces.length) {
    await flush();
    return hang(s);
  }
  buffer += chunk(s, isChat(s) ? { delta: {}, finish_reason: finish } : { text: "", finish_reason: finish });
  if (s.received.body.stream_options?.include_usage && !b.omitUsage) buffer += chunk(s, null, usageOf(s, pieces.length));
  s.res.end(`${buffer}data: [DONE]\n\n`);
}

function jsonResponse(s: Stream): void {
  const { pieces, finish } = plan(s.received.body, s.behaviour);
  s.tokensSent = pieces.length;
  const text = pieces.join("");
  const choice = isChat(s)
    ? { index: 0, message: { role: "assistant", content: text }, finish_reason: finish }
    : { index: 0, text, finish_reason: finish };
  const object = isChat(s) ? "chat.completion" : "text_completion";
  const usage = s.behaviour.omitUsage ? {} : { usage: usageOf(s, pieces.length) };
  sendJson(s.res, 200, { id: s.id, object, created: s.created, model: s.model, choices: [choice], ...usage });
}

async function answer(s: Stream): Promise<void> {
  const b = s.behaviour;
  if (b.stallBeforeFirstToken) return hang(s);
  if (!(await pause(s, b.delayBeforeFirstTokenMs))) return;
  if (b.failWithStatus) return sendError(s.res, b.failWithStatus, b.failMessage ?? `upstream double failure (${b.failWithStatus})`);
  if (!s.received.body.stream) {
    if (b.stallAfterTokens !== undefined) return hang(s);
    const perToken = b.delayPerTokenMs ?? 0;
    if (perToken > 0 && !(await pause(s, perToken * plan(s.received.body, b).pieces.length))) return;
    return jsonResponse(s);
  }
  return streamResponse(s);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts).toString("utf8");
}

export async function startUpstreamDouble(options: UpstreamDoubleOptions = {}): Promise<UpstreamDouble> {
  const { model = "double-model", port: listenPort = 0, ...initial } = options;
  let behaviour: UpstreamBehaviour = { ...initial };
  const requests: ReceivedRequest[] = [];
  const events = new EventEmitter<UpstreamDoubleEvents>();
  const sockets = new Set<Socket>();
  const shutdown = new AbortController();
  let active = 0;
  let accepted = 0;
  let seq = 0;

  async function handlePost(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(await readBody(req));
    } catch {
      return sendError(res, 400, "request body is not valid JSON");
    }
    const parsed = RequestBody.safeParse(json);
    if (!parsed.success) return sendError(res, 400, z.prettifyError(parsed.error));
    const body = parsed.data;
    if (path.endsWith("/chat/completions") ? !body.messages : body.prompt === undefined) {
      return sendError(res, 400, path.endsWith("/chat/completions") ? "messages is required" : "prompt is required");
    }
    const received: ReceivedRequest = { path, headers: req.headers, body };
    requests.push(received);
    events.emit("request", received);
    const closed = new AbortController();
    const signal = AbortSignal.any([closed.signal, shutdown.signal]);
    const s: Stream = {
      res, received, behaviour: { ...behaviour }, signal, model: body.model ?? model,
      id: `cmpl-double-${++seq}`, created: Math.floor(Date.now() / 1000), tokensSent: 0,
    };
    res.on("close", () => {
      if (!res.writableFinished && !shutdown.signal.aborted) {
        closed.abort();
        events.emit("client-closed", { request: received, tokensSent: s.tokensSent });
      }
    });
    active++;
    try {
      await answer(s);
    } finally {
      active--;
    }
    if (res.writableFinished || res.writableEnded) events.emit("finished", received);
  }

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://double").pathname;
    // vLLM's and SGLang's liveness route: 200 with an empty body once the server is up.
    if (req.method === "GET" && path === "/health") return void res.writeHead(200, { "content-length": 0 }).end();
    if (req.method === "GET" && path === "/v1/models") {
      return sendJson(res, 200, { object: "list", data: [{ id: model, object: "model", created: 0, owned_by: "upstream-double" }] });
    }
    if (req.method === "POST" && (path === "/v1/chat/completions" || path === "/v1/completions")) {
      handlePost(req, res, path).catch((err: unknown) => {
        if (!res.headersSent) sendError(res, 500, String(err));
        else res.destroy();
      });
      return;
    }
    sendError(res, 404, `no route for ${req.method} ${path}`);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    accepted++;
    socket.on("close", () => sockets.delete(socket));
  });
  server.listen(listenPort, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get behaviour() {
      return behaviour;
    },
    set(changes) {
      behaviour = { ...behaviour, ...changes };
    },
    reset(next = initial) {
      behaviour = { ...next };
      requests.length = 0;
    },
    activeConnections: () => sockets.size,
    totalConnections: () => accepted,
    activeRequests: () => active,
    events,
    async close() {
      shutdown.abort();
      const closing = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closing;
    },
  };
}
