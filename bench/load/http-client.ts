import { Agent, request, type IncomingMessage } from "node:http";
import { performance } from "node:perf_hooks";
import type { Sample } from "./runner.ts";
import { SseScanner } from "./sse.ts";

/** Where an OpenAI-compatible row is called. */
export interface HttpEndpoint {
  /** Base URL ending in /v1. */
  baseURL: string;
  /** Extra headers (auth, a proxy's routing headers). */
  headers: Record<string, string>;
  model: string;
}

export interface ChatBody {
  max_tokens: number;
  stream: boolean;
  seed: number;
  temperature: number;
}

const PROMPT = "Write one short sentence about rivers.";

/** The request body every row gets for the same `body` (the same bytes for every peer). */
export function chatPayload(model: string, body: ChatBody): string {
  return JSON.stringify({
    model,
    messages: [{ role: "user", content: PROMPT }],
    ...body,
    ...(body.stream ? { stream_options: { include_usage: true } } : {}),
  });
}

export const CHAT_PROMPT = PROMPT;

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 160 ? `${flat.slice(0, 160)}...` : flat;
}

/**
 * A keep-alive HTTP/1.1 client with a bounded connection pool (one socket per concurrent
 * request), for OpenAI-style chat completions. Every request is bounded by `timeoutMs`.
 */
export class HttpLoadClient {
  private readonly agent: Agent;
  private readonly url: URL;

  constructor(
    private readonly endpoint: HttpEndpoint,
    maxSockets: number,
    private readonly timeoutMs = 30_000,
  ) {
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
    this.url = new URL(`${endpoint.baseURL.replace(/\/+$/, "")}/chat/completions`);
  }

  /** A non-streaming request: ok when the answer is 200 with a message. */
  complete(body: ChatBody): Promise<Sample> {
    return this.post(chatPayload(this.endpoint.model, body), (res, start, finish) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => {
        const latencyMs = performance.now() - start;
        const text = Buffer.concat(parts).toString("utf8");
        if (res.statusCode !== 200) return finish({ ok: false, error: `HTTP ${res.statusCode}: ${excerpt(text)}`, latencyMs });
        try {
          const json = JSON.parse(text) as { choices?: { message?: { content?: unknown } }[]; usage?: { completion_tokens?: number } };
          if (typeof json.choices?.[0]?.message?.content !== "string") throw new Error("no message");
          finish({ ok: true, latencyMs, tokens: json.usage?.completion_tokens ?? 0 });
        } catch {
          finish({ ok: false, error: `HTTP 200 without a completion: ${excerpt(text)}`, latencyMs });
        }
      });
    });
  }

  /** A streaming request: timestamps the first content token as its bytes arrive. */
  stream(body: ChatBody): Promise<Sample> {
    return this.post(chatPayload(this.endpoint.model, body), (res, start, finish) => {
      res.setEncoding("utf8");
      if (res.statusCode !== 200) {
        let text = "";
        res.on("data", (d: string) => (text += d));
        res.on("end", () => finish({ ok: false, error: `HTTP ${res.statusCode}: ${excerpt(text)}`, latencyMs: performance.now() - start }));
        return;
      }
      const scanner = new SseScanner();
      res.on("data", (d: string) => scanner.push(d, performance.now()));
      res.on("end", () => {
        const latencyMs = performance.now() - start;
        const fail = scanner.error ?? (scanner.firstTokenAt === undefined ? "stream ended without a token" : !scanner.done ? "stream ended without [DONE]" : undefined);
        if (fail) return finish({ ok: false, error: fail, latencyMs });
        finish({ ok: true, latencyMs, ttftMs: scanner.firstTokenAt! - start, tokens: scanner.tokens });
      });
    });
  }

  close(): void {
    this.agent.destroy();
  }

  private post(
    payload: string,
    onResponse: (res: IncomingMessage, start: number, finish: (s: Sample) => void) => void,
  ): Promise<Sample> {
    return new Promise((resolve) => {
      let settled = false;
      const start = performance.now();
      const finish = (s: Sample): void => {
        if (settled) return;
        settled = true;
        resolve(s);
      };
      const req = request(this.url, {
        method: "POST",
        agent: this.agent,
        signal: AbortSignal.timeout(this.timeoutMs),
        headers: { ...this.endpoint.headers, "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
      }, (res) => {
        res.on("error", (err) => finish({ ok: false, error: err.message, latencyMs: performance.now() - start }));
        res.on("close", () => {
          if (!res.complete) finish({ ok: false, error: "connection closed mid-response", latencyMs: performance.now() - start });
        });
        onResponse(res, start, finish);
      });
      req.on("error", (err) => {
        const timedOut = err.name === "AbortError" || err.name === "TimeoutError";
        finish({ ok: false, error: timedOut ? `not finished within ${this.timeoutMs} ms` : err.message, latencyMs: performance.now() - start });
      });
      req.end(payload);
    });
  }
}
