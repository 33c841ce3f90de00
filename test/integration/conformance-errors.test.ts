import OpenAI from "openai";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GatewayFrame } from "../../protocol/index.ts";
import { authFrame } from "../support/hotkeys.ts";
import { makeSeed, TINY_CHUTE, type SeedChute } from "../../scripts/lib/seed.ts";
import { startGateway, type Gateway } from "../support/gateway.ts";
import { waitForInstances } from "../support/router.ts";

/**
 * Every error status OpenRouter understands, as the OpenAI error object with `x-request-id`:
 * 400, 401, 402, 403, 404, 408, 413, 429 (+Retry-After), 502 (a miner's invalid response),
 * 503; and CORS preflight. A scripted agent (a raw WebSocket client speaking the protocol)
 * serves the chute, so a test can make a miner stall or answer wrongly on purpose.
 */
const IDLE_CHUTE: SeedChute = { ...TINY_CHUTE, id: "chute-idle", name: "sluice/idle" };
let gw: Gateway;
let agent: WebSocket;

/**
 * Answers embedding jobs with one vector too few, a chat that says "badtool" with a tool-call
 * piece for a call that never started; never answers a chat that says "stall".
 */
function startScriptedAgent(): Promise<WebSocket> {
  const miner = gw.seed.miners[0]!;
  const ws = new WebSocket(`${gw.url.replace(/^http/, "ws")}/v1/miners/connect?miner=${encodeURIComponent(miner.id)}`);
  const send = (frame: object) => ws.send(JSON.stringify(frame));
  return new Promise((resolve, reject) => {
    ws.once("error", reject);
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as GatewayFrame;
      if (frame.type === "challenge") {
        ws.send(authFrame(miner, frame.nonce));
      } else if (frame.type === "welcome") {
        send({ type: "capacity", instances: [{ instanceId: `${miner.id}:scripted`, chute: TINY_CHUTE.name, maxConcurrency: 1 }] });
        resolve(ws);
      } else if (frame.type === "ping") {
        send({ type: "pong", t: frame.t });
      } else if (frame.type === "job" && frame.spec.kind === "completion" && frame.spec.embedding) {
        send({ type: "chunk", id: frame.id, text: "", tokens: 1, embeddings: [{ index: 0, base64: "AACAPw==" }] });
        send({ type: "done", id: frame.id, finishReason: "stop", usage: { promptTokens: 4, completionTokens: 0 }, timings: { ttftMs: 1, durationMs: 1 } });
      } else if (frame.type === "job" && frame.spec.kind === "chat" && frame.spec.messages.at(-1)?.content === "badtool") {
        send({ type: "chunk", id: frame.id, text: "", tokens: 1, promptTokens: 5, toolCalls: [{ index: 0, arguments: "{}" }] });
        send({ type: "done", id: frame.id, finishReason: "tool_calls", usage: { promptTokens: 5, completionTokens: 1 }, timings: { ttftMs: 1, durationMs: 1 } });
      }
    });
  });
}

beforeAll(async () => {
  gw = await startGateway({
    // $0.0002: enough for small requests, not for a 1024-token hold.
    seed: makeSeed({ chutes: [TINY_CHUTE, IDLE_CHUTE], creditUsd: 0.0003 }),
    vars: { MAX_BODY_BYTES: "65536", FIRST_TOKEN_TIMEOUT_MS: "1500", QUEUE_WAIT_MS: "200" },
  });
  agent = await startScriptedAgent();
  await waitForInstances(gw, TINY_CHUTE.id, 1);
});
afterAll(async () => {
  agent?.terminate();
  await gw?.close();
});

interface ErrorResult {
  status: number;
  headers: Headers;
  error: { message: string; type: string; param: string | null; code: string | null };
}

async function call(path: string, body: unknown, headers: Record<string, string> = {}): Promise<ErrorResult> {
  const res = await fetch(`${gw.baseURL}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const json = (await res.json()) as { error: ErrorResult["error"] };
  expect(Object.keys(json.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(res.headers.get("x-request-id")).toMatch(/.+/);
  return { status: res.status, headers: res.headers, error: json.error };
}

const chat = (extra: object = {}) => ({ model: TINY_CHUTE.name, messages: [{ role: "user", content: "hi" }], max_tokens: 4, ...extra });

describe("error statuses", () => {
  it("400 invalid field, 401 no key, 404 unknown model, 413 body too large", async () => {
    expect(await call("/chat/completions", chat({ top_k: -1 }))).toMatchObject({ status: 400, error: { param: "top_k", type: "invalid_request_error" } });
    expect(await call("/chat/completions", chat(), { authorization: "" })).toMatchObject({ status: 401, error: { type: "authentication_error" } });
    expect(await call("/chat/completions", chat({ model: "nobody/none" }))).toMatchObject({ status: 404, error: { code: "model_not_found", param: "model" } });
    const big = await call("/chat/completions", chat({ messages: [{ role: "user", content: "x".repeat(70_000) }] }));
    expect(big.status).toBe(413);
  });

  it("402 when the balance cannot cover the request's worst case", async () => {
    const r = await call("/chat/completions", chat({ max_tokens: 1024 }));
    expect(r).toMatchObject({ status: 402, error: { code: "insufficient_quota" } });
  });

  it("403 for a key without the invoke scope", async () => {
    const created = await fetch(`${gw.baseURL}/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "read-only", scopes: ["usage:read"] }),
    });
    const { key } = (await created.json()) as { key: string };
    expect(await call("/chat/completions", chat(), { authorization: `Bearer ${key}` })).toMatchObject({ status: 403, error: { type: "permission_error" } });
    expect(await call("/embeddings", { model: TINY_CHUTE.name, input: "x" }, { authorization: `Bearer ${key}` })).toMatchObject({ status: 403 });
  });

  it("408 when no first token arrives in time; 429 with Retry-After while the only slot is taken", async () => {
    const stalled = call("/chat/completions", chat({ messages: [{ role: "user", content: "stall" }] }));
    await new Promise((r) => setTimeout(r, 300));
    const busy = await call("/chat/completions", chat());
    expect(busy).toMatchObject({ status: 429, error: { type: "rate_limit_error" } });
    expect(Number(busy.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await stalled).toMatchObject({ status: 408, error: { code: "upstream_timeout", type: "timeout_error" } });
    // The official client sees 408 as a timeout it may retry; with retries off it raises it.
    const client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
    const err = await client.chat.completions.create(chat({ messages: [{ role: "user", content: "stall" }] }) as OpenAI.ChatCompletionCreateParamsNonStreaming).catch((e: unknown) => e);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(408);
  });

  it("502 when the miner's response is invalid (an embedding missing), and nothing is charged", async () => {
    const r = await call("/embeddings", { model: TINY_CHUTE.name, input: ["a", "b"] });
    expect(r).toMatchObject({ status: 502, error: { code: "bad_upstream_response", type: "server_error" } });
    await expect
      .poll(() => gw.db.prepare("SELECT outcome, error_code, cost_nano FROM invocations WHERE endpoint = 'embedding'").first())
      .toEqual({ outcome: "error", error_code: "bad_upstream_response", cost_nano: 0 });
  });

  it("502 when the miner's tool-call pieces are out of order; streamed, an error chunk ends the stream", async () => {
    const body = chat({ messages: [{ role: "user", content: "badtool" }], tools: [{ type: "function", function: { name: "f" } }], tool_choice: "required" });
    expect(await call("/chat/completions", body)).toMatchObject({ status: 502, error: { code: "bad_upstream_response" } });
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
    });
    const text = await res.text();
    expect(text).not.toContain("tool_calls\":[");
    expect(text).toContain('"finish_reason":"error"');
    expect(text).toContain('"code":"bad_upstream_response"');
  });

  it("503 with Retry-After when no miner serves the model", async () => {
    const r = await call("/chat/completions", chat({ model: IDLE_CHUTE.name }));
    expect(r).toMatchObject({ status: 503, error: { code: "no_capacity" } });
    expect(r.headers.get("retry-after")).toBeTruthy();
  });
});

describe("headers", () => {
  it("x-request-id on successful, listing, unknown-route and health responses", async () => {
    for (const [path, status] of [["/v1/models", 200], ["/health", 200], ["/v1/nope", 404]] as const) {
      const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${gw.seed.apiKey}` } });
      expect(res.status, path).toBe(status);
      expect(res.headers.get("x-request-id"), path).toMatch(/.+/);
    }
  });

  it("CORS preflight allows a browser to call the API with its key", async () => {
    const res = await fetch(`${gw.baseURL}/chat/completions`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-methods")).toMatch(/POST/);
    expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toMatch(/authorization/);
    expect(res.headers.get("x-request-id")).toMatch(/.+/);
    const actual = await fetch(`${gw.baseURL}/models`, { headers: { origin: "https://app.example", authorization: `Bearer ${gw.seed.apiKey}` } });
    expect(actual.headers.get("access-control-allow-origin")).toBe("*");
    expect(actual.headers.get("access-control-expose-headers")?.toLowerCase()).toMatch(/x-request-id/);
  });
});
