import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type Gateway } from "../support/gateway.ts";

/** Every bad input gets the OpenAI error object with the right status (no agent connected here). */
let gw: Gateway;
let client: OpenAI;

beforeAll(async () => {
  gw = await startGateway({ vars: { MAX_BODY_BYTES: "4096" } });
  client = new OpenAI({ baseURL: gw.baseURL, apiKey: gw.seed.apiKey, maxRetries: 0 });
});
afterAll(() => gw?.close());

async function post(path: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${gw.baseURL}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${gw.seed.apiKey}`, "content-type": "application/json", ...headers },
    body,
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as { error: Record<string, unknown> } };
}

function expectErrorShape(body: { error: Record<string, unknown> }) {
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(typeof body.error.message).toBe("string");
}

const chat = { model: "sluice/tiny-chat", messages: [{ role: "user", content: "hi" }] };

describe("errors", () => {
  it("401 without a key, and with a wrong key (official client raises AuthenticationError)", async () => {
    const res = await post("/chat/completions", JSON.stringify(chat), { authorization: "" });
    expect(res.status).toBe(401);
    expectErrorShape(res.body);
    expect(res.body.error.type).toBe("authentication_error");
    const bad = new OpenAI({ baseURL: gw.baseURL, apiKey: "sk-sluice-wrong", maxRetries: 0 });
    await expect(bad.chat.completions.create({ model: chat.model, messages: [{ role: "user", content: "x" }] })).rejects.toBeInstanceOf(
      OpenAI.AuthenticationError,
    );
  });

  it("404 for an unknown model, with param model", async () => {
    const err = await client.chat.completions
      .create({ model: "nobody/nothing", messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const res = await post("/completions", JSON.stringify({ model: "nobody/nothing", prompt: "x" }));
    expect(res.status).toBe(404);
    expect(res.body.error).toMatchObject({ code: "model_not_found", param: "model" });
  });

  it("400 for malformed JSON", async () => {
    const res = await post("/chat/completions", "{not json");
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe("invalid_json");
  });

  it("400 with param for missing and invalid fields", async () => {
    const missing = await post("/chat/completions", JSON.stringify({ model: chat.model }));
    expect(missing.status).toBe(400);
    expect(missing.body.error.param).toBe("messages");
    expect(missing.body.error.message).toMatch(/Missing required parameter 'messages'/);
    const noModel = await post("/chat/completions", JSON.stringify({ messages: chat.messages }));
    expect(noModel.status).toBe(400);
    expect(noModel.body.error.param).toBe("model");
    const wrongType = await post("/chat/completions", JSON.stringify({ ...chat, messages: "oops" }));
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.error).toMatchObject({
      param: "messages",
      message: "Invalid type for 'messages': expected an array, but got a string instead.",
    });
    const temp = await post("/chat/completions", JSON.stringify({ ...chat, temperature: 7 }));
    expect(temp.status).toBe(400);
    expect(temp.body.error.param).toBe("temperature");
    const role = await post("/chat/completions", JSON.stringify({ ...chat, messages: [{ role: "robot", content: "x" }] }));
    expect(role.body.error.param).toBe("messages[0].role");
    const tooMany = await post("/chat/completions", JSON.stringify({ ...chat, max_tokens: 10_000_000 }));
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.param).toBe("max_tokens");
    const tools = await post("/chat/completions", JSON.stringify({ ...chat, tools: [] }));
    expect(tools.status).toBe(400);
    expect(tools.body.error.param).toBe("tools");
    const prompt = await post("/completions", JSON.stringify({ model: chat.model }));
    expect(prompt.status).toBe(400);
    expect(prompt.body.error.param).toBe("prompt");
    for (const r of [missing, wrongType, noModel, temp, role, tooMany, tools, prompt]) expectErrorShape(r.body);
  });

  it("413 for a body over the limit", async () => {
    const res = await post("/chat/completions", JSON.stringify({ ...chat, messages: [{ role: "user", content: "x".repeat(10_000) }] }));
    expect(res.status).toBe(413);
    expectErrorShape(res.body);
  });

  it("503 when no miner serves the model, with Retry-After", async () => {
    const res = await post("/chat/completions", JSON.stringify(chat));
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("no_capacity");
    expect(res.headers.get("retry-after")).toBeTruthy();
    expect(res.headers.get("x-request-id")).toBeTruthy();
  });

  it("404 for unknown routes, and a miner connect without upgrade is refused", async () => {
    const res = await fetch(`${gw.baseURL}/nope`);
    expect(res.status).toBe(404);
    expectErrorShape((await res.json()) as { error: Record<string, unknown> });
    const connect = await fetch(`${gw.baseURL}/miners/connect?miner=x`);
    expect(connect.status).toBe(426);
  });

  it("records failed invocations in D1", async () => {
    // Rows are written in batches, shortly after the response.
    const row = () => gw.db.prepare("SELECT outcome, error_code FROM invocations WHERE error_code = 'no_capacity'").first();
    await expect.poll(row).toMatchObject({ outcome: "error", error_code: "no_capacity" });
    // ...and emits one canonical log line for it.
    expect(gw.logs.filter((l) => l.event === "invocation" && l.errorCode === "no_capacity")).toHaveLength(1);
  });
});
