import { describe, expect, it } from "vitest";
import { app } from "./app.ts";

/** Routes that answer before touching D1 or a Durable Object, driven with app.request(). */
const env = { MAX_BODY_BYTES: "64", QUEUE_WAIT_MS: "10", FIRST_TOKEN_TIMEOUT_MS: "1000" } as unknown as Env;

describe("gateway app", () => {
  it("401 without a key, in the OpenAI error shape, with a request id", async () => {
    const res = await app.request("/v1/chat/completions", { method: "POST", body: "{}" }, env);
    expect(res.status).toBe(401);
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(await res.json()).toEqual({
      error: { message: expect.stringContaining("API key") as unknown, type: "authentication_error", param: null, code: "invalid_api_key" },
    });
  });

  it("413 for a body over MAX_BODY_BYTES", async () => {
    const res = await app.request("/v1/chat/completions", { method: "POST", body: "x".repeat(100) }, env);
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("payload_too_large");
  });

  it("404 for unknown routes; CORS preflight allowed", async () => {
    expect((await app.request("/v2/x", {}, env)).status).toBe(404);
    const pre = await app.request(
      "/v1/chat/completions",
      { method: "OPTIONS", headers: { origin: "https://example.com", "access-control-request-method": "POST" } },
      env,
    );
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("*");
  });

  it("every response carries the CORS headers and its request id: the client's when usable, else a new one", async () => {
    const own = await app.request("/v1/chat/completions", { method: "POST", body: "{}", headers: { "x-request-id": "client-trace_01=" } }, env);
    expect(own.status).toBe(401);
    expect(own.headers.get("x-request-id")).toBe("client-trace_01=");
    expect(own.headers.get("access-control-allow-origin")).toBe("*");
    expect(own.headers.get("access-control-expose-headers")?.split(",")).toEqual(expect.arrayContaining(["x-request-id", "retry-after", "x-ratelimit-remaining-tokens"]));
    for (const bad of ["has space", "x".repeat(256)]) {
      const res = await app.request("/v2/x", { headers: { "x-request-id": bad } }, env);
      expect(res.status).toBe(404);
      expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    }
    const health = await app.request("/health", {}, env);
    expect(await health.json()).toEqual({ ok: true });
    expect(health.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(health.headers.get("access-control-allow-origin")).toBeNull();
  });
});
