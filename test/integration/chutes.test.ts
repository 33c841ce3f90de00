import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { startAgent, type AgentProcess } from "../support/agent-process.ts";
import { startGateway, TEST_SECRETS, type Gateway } from "../support/gateway.ts";
import { routerSnapshot, waitForInstances } from "../support/router.ts";
import { startUpstreamDouble, type UpstreamDouble } from "../support/upstream-double.ts";

/**
 * The chutes API (/v1/chutes) on the real Worker in workerd: create, list, inspect (with a real
 * agent serving the chute), change and delete; private chutes are invisible and uncallable for
 * other accounts, deleted ones for everyone.
 */

let gw: Gateway;
/** Account A (the seeded one): a key with every scope, and one with `invoke` only. */
let keyA: string;
let invokeOnlyA: string;
/** Account B, made through the operator API. */
let keyB: string;
let accountB: string;
let upstream: UpstreamDouble | undefined;
let agent: AgentProcess | undefined;

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}
type Percentiles = { p50: number; p90: number; p99: number; samples: number };
/** The fields these tests read; the rest are compared with toMatchObject. */
interface Chute {
  id: string;
  object: "chute";
  name: string;
  owned_by: string;
  public: boolean;
  pricing: { prompt: string; completion: string; input_cache_read: string | null };
  created: number;
  updated: number | null;
}
interface LiveChute extends Chute {
  instances: { id: string; miner_id: string; inflight: number; capacity: number; managed: boolean; health: { served: number; ttft_ms: number | null } }[];
  utilization: { inflight: number; capacity: number; waiting: number; now: number | null; short: number | null; long: number | null };
  stats: { requests: number; refused: number; ttft_ms: Percentiles | null; tokens_per_second: Percentiles | null };
  scaler: { target: number; reason: string; pending: unknown[] } | null;
}
interface Reply<T> {
  status: number;
  body: T;
}

async function call<T = Record<string, unknown>>(method: string, path: string, key: string | null, body?: unknown): Promise<Reply<T>> {
  const headers: Record<string, string> = {};
  if (key !== null) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${gw.baseURL}${path}`, { method, headers, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as T };
}
const errorOf = (r: Reply<unknown>) => (r.body as ErrorBody).error;

const chat = (key: string, model: string) =>
  call("POST", "/chat/completions", key, { model, messages: [{ role: "user", content: "Hello" }], max_tokens: 8 });

const listed = async (key: string) => (await call<{ object: string; data: Chute[] }>("GET", "/chutes", key)).body.data.map((c) => c.name);
const models = async (key: string) => (await call<{ data: { id: string }[] }>("GET", "/models", key)).body.data.map((m) => m.id);

function newChute(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    model_ref: "double-model",
    engine: "openai-upstream",
    gpu: { count: 0 },
    context_length: 4096,
    max_output_tokens: 512,
    pricing: { prompt: "0.0000001", completion: "0.0000004" },
    concurrency: 2,
    min_instances: 0,
    max_instances: 2,
    public: true,
    ...extra,
  };
}

async function create(key: string, body: unknown): Promise<Chute> {
  const res = await call<Chute>("POST", "/chutes", key, body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body;
}

beforeAll(async () => {
  gw = await startGateway();
  keyA = gw.seed.apiKey;
  const limited = await call<{ key: string }>("POST", "/keys", keyA, { name: "invoke-only", scopes: ["invoke"] });
  invokeOnlyA = limited.body.key;
  const now = Math.floor(Date.now() / 1000);
  const admin = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("chutes-test")
    .setAudience("sluice-admin")
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .sign(new TextEncoder().encode(TEST_SECRETS.ADMIN_JWT_SECRET));
  const b = await call<{ account_id: string; api_key: string }>("POST", "/admin/accounts", admin, { name: "account-b", credit_usd: "5" });
  expect(b.status).toBe(201);
  keyB = b.body.api_key;
  accountB = b.body.account_id;
});

afterAll(async () => {
  agent?.kill();
  await upstream?.close();
  await gw?.close();
});

describe("POST /v1/chutes", () => {
  it("creates a chute owned by the key's account (201), prices stored as nano-USD per million tokens", async () => {
    const body = newChute("acme/qwen3-8b", {
      engine: "vllm",
      model_ref: "Qwen/Qwen3-8B",
      gpu: { count: 2, min_vram_mb: 40_000, types: ["a100", "h100"] },
      context_length: 32_768,
      max_output_tokens: 8192,
      pricing: { prompt: "0.00000015", completion: "0.0000006", input_cache_read: "0.00000003" },
      concurrency: 32,
      max_instances: 4,
      display_name: "Qwen3 8B",
      description: "Qwen3 on vLLM",
      hugging_face_id: "Qwen/Qwen3-8B",
      quantization: "bf16",
      deprecation_date: "2027-01-31",
    });
    const chute = await create(keyA, body);
    // Every field comes back as it was given, in the same units.
    expect(chute).toMatchObject({ ...body, object: "chute", owned_by: gw.seed.accountId, updated: null });
    expect(chute.id).toMatch(/^chute-/);
    expect(Math.abs(chute.created - Date.now() / 1000)).toBeLessThan(60);
    const row = await gw.db
      .prepare("SELECT prompt_price_nano_per_m AS p, completion_price_nano_per_m AS c, cached_prompt_price_nano_per_m AS k, gpu_types AS t, owner_account_id AS o FROM chutes WHERE id = ?")
      .bind(chute.id)
      .first();
    expect(row).toEqual({ p: 150_000_000, c: 600_000_000, k: 30_000_000, t: '["a100","h100"]', o: gw.seed.accountId });
  });

  it("fills defaults: public, one instance at most, max_output_tokens from the context, cached price = prompt price", async () => {
    const chute = await create(keyA, {
      name: "acme/defaults",
      model_ref: "x.gguf",
      engine: "llama-cpp",
      gpu: { count: 0 },
      context_length: 2048,
      pricing: { prompt: "0", completion: "0" },
    });
    expect(chute).toMatchObject({
      public: true,
      concurrency: 1,
      min_instances: 0,
      max_instances: 1,
      max_output_tokens: 2048,
      gpu: { count: 0, min_vram_mb: 0, types: [] },
      pricing: { prompt: "0", completion: "0", input_cache_read: null },
      quantization: "unknown",
    });
  });

  it("401 without a key, 403 without the chutes:manage scope", async () => {
    const none = await call("POST", "/chutes", null, newChute("acme/nokey"));
    expect(none.status).toBe(401);
    expect(errorOf(none).code).toBe("invalid_api_key");
    const scoped = await call("POST", "/chutes", invokeOnlyA, newChute("acme/noscope"));
    expect(scoped.status).toBe(403);
    expect(errorOf(scoped)).toMatchObject({ type: "permission_error", code: "permission_denied" });
    expect(errorOf(scoped).message).toMatch(/chutes:manage/);
  });

  it("400 with param for invalid fields, in the OpenAI error shape", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [newChute("Acme/Upper"), "name"],
      [newChute("no-org"), "name"],
      [newChute("acme/bad name"), "name"],
      [newChute("acme/x", { engine: "tgi" }), "engine"],
      [newChute("acme/x", { gpu: { count: 1, vram_gb: 80 } }), "gpu.vram_gb"],
      [newChute("acme/x", { gpu: { count: -1 } }), "gpu.count"],
      [newChute("acme/x", { gpu: { count: 0, types: ["h100"] } }), "gpu.types"],
      [newChute("acme/x", { pricing: { prompt: 0.0000001, completion: "0" } }), "pricing.prompt"],
      [newChute("acme/x", { pricing: { prompt: "-1", completion: "0" } }), "pricing.prompt"],
      [newChute("acme/x", { pricing: { prompt: "0.0000000000000001", completion: "0" } }), "pricing.prompt"],
      [newChute("acme/x", { min_instances: 3, max_instances: 2 }), "min_instances"],
      [newChute("acme/x", { max_instances: 0 }), "max_instances"],
      [newChute("acme/x", { max_instances: 1000 }), "max_instances"],
      [newChute("acme/x", { concurrency: 0 }), "concurrency"],
      [newChute("acme/x", { max_output_tokens: 5000 }), "max_output_tokens"],
      [newChute("acme/x", { context_length: undefined }), "context_length"],
      [newChute("acme/x", { public: "yes" }), "public"],
      [newChute("acme/x", { deprecation_date: "soon" }), "deprecation_date"],
      [newChute("acme/x", { owner: "someone-else" }), "owner"],
    ];
    for (const [body, param] of cases) {
      const res = await call("POST", "/chutes", keyA, body);
      expect(res.status, param).toBe(400);
      expect(errorOf(res), param).toMatchObject({ type: "invalid_request_error", code: "invalid_request", param });
    }
    const bad = await call("POST", "/chutes", keyA, "{not json");
    expect(bad.status).toBe(400);
    expect(errorOf(bad).code).toBe("invalid_json");
    expect(await listed(keyA)).not.toContain("acme/x");
  });

  it("409 when a live chute has the name", async () => {
    for (const name of [TINY_CHUTE.name, "acme/qwen3-8b"]) {
      const res = await call("POST", "/chutes", keyB, newChute(name));
      expect(res.status, name).toBe(409);
      expect(errorOf(res)).toMatchObject({ code: "conflict", type: "invalid_request_error", param: "name" });
    }
  });
});

describe("private chutes", () => {
  let privateA: Chute;
  let privateB: Chute;

  beforeAll(async () => {
    privateA = await create(keyA, newChute("acme/private-a", { public: false }));
    privateB = await create(keyB, newChute("bco/private-b", { public: false }));
  });

  it("are listed (/v1/chutes and /v1/models) for their owner only; public ones for everyone", async () => {
    const a = await listed(keyA);
    expect(a).toEqual(expect.arrayContaining(["acme/private-a", "acme/qwen3-8b", TINY_CHUTE.name]));
    expect(a).not.toContain("bco/private-b");
    const b = await listed(keyB);
    expect(b).toEqual(expect.arrayContaining(["bco/private-b", "acme/qwen3-8b", TINY_CHUTE.name]));
    expect(b).not.toContain("acme/private-a");
    expect(await models(keyA)).toContain("acme/private-a");
    expect(await models(keyB)).not.toContain("acme/private-a");
    // A key with only `invoke` may read the catalog.
    expect(await listed(invokeOnlyA)).toContain("acme/private-a");
  });

  it("are the same 404 as a chute that never existed, for another account, by id or by name", async () => {
    const never = await call("GET", "/chutes/chute-never-was", keyB);
    expect(never.status).toBe(404);
    for (const ref of [privateA.id, encodeURIComponent(privateA.name), privateA.name]) {
      const res = await call("GET", `/chutes/${ref}`, keyB);
      expect(res.status, ref).toBe(404);
      expect(errorOf(res)).toMatchObject({ code: "not_found", type: errorOf(never).type, param: errorOf(never).param });
      expect((await call("GET", `/chutes/${ref}`, keyA)).status, ref).toBe(200);
    }
    expect((await call("GET", `/models/${encodeURIComponent(privateA.name)}`, keyB)).status).toBe(404);
    expect((await call("PATCH", `/chutes/${privateA.id}`, keyB, { concurrency: 3 })).status).toBe(404);
    expect((await call("DELETE", `/chutes/${privateA.id}`, keyB)).status).toBe(404);
    expect((await call("GET", `/chutes/${privateB.id}`, keyA)).status).toBe(404);
  });

  it("are uncallable for another account (404 model_not_found), callable for the owner", async () => {
    const other = await chat(keyB, privateA.name);
    expect(other.status).toBe(404);
    expect(errorOf(other)).toMatchObject({ code: "model_not_found", param: "model" });
    // The owner reaches the router: no instance serves it yet, so 503 rather than 404.
    const owner = await chat(keyA, privateA.name);
    expect(owner.status).toBe(503);
    expect(errorOf(owner).code).toBe("no_capacity");
  });

  it("another account's public chute cannot be changed or deleted by a non-owner (404)", async () => {
    const qwen = (await call<{ data: Chute[] }>("GET", "/chutes", keyB)).body.data.find((c) => c.name === "acme/qwen3-8b")!;
    expect((await call("GET", `/chutes/${qwen.id}`, keyB)).status).toBe(200);
    expect((await call("PATCH", `/chutes/${qwen.id}`, keyB, { public: false })).status).toBe(404);
    expect((await call("DELETE", `/chutes/${qwen.id}`, keyB)).status).toBe(404);
  });
});

describe("PATCH /v1/chutes/:id", () => {
  let chute: Chute;

  beforeAll(async () => {
    chute = await create(keyA, newChute("acme/patchable"));
  });

  it("changes prices, scaling, visibility, GPU needs and metadata; the catalog sees it at once", async () => {
    const res = await call<Chute>("PATCH", `/chutes/${chute.id}`, keyA, {
      pricing: { prompt: "0.000001", input_cache_read: "0.0000002" },
      concurrency: 8,
      min_instances: 1,
      max_instances: 3,
      gpu: { count: 1, min_vram_mb: 24_000 },
      max_output_tokens: 1024,
      description: "changed",
      quantization: "fp8",
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({
      id: chute.id,
      name: "acme/patchable",
      pricing: { prompt: "0.000001", completion: "0.0000004", input_cache_read: "0.0000002" },
      concurrency: 8,
      min_instances: 1,
      max_instances: 3,
      gpu: { count: 1, min_vram_mb: 24_000, types: [] },
      max_output_tokens: 1024,
      description: "changed",
      quantization: "fp8",
    });
    expect(res.body.updated).toBeGreaterThanOrEqual(chute.created);
    const model = await call<{ pricing: Record<string, string>; max_output_length: number }>("GET", `/models/${encodeURIComponent(chute.name)}`, keyB);
    expect(model.body).toMatchObject({ pricing: { prompt: "0.000001", input_cache_read: "0.0000002" }, max_output_length: 1024 });

    // Private now: gone for B at once (listing, lookup, inference), still there for A.
    expect((await call("PATCH", `/chutes/${encodeURIComponent(chute.name)}`, keyA, { public: false, pricing: { input_cache_read: null } })).status).toBe(200);
    expect(await listed(keyB)).not.toContain(chute.name);
    expect((await call("GET", `/chutes/${chute.id}`, keyB)).status).toBe(404);
    expect(errorOf(await chat(keyB, chute.name)).code).toBe("model_not_found");
    const mine = await call<Chute>("GET", `/chutes/${chute.id}`, keyA);
    expect(mine.body).toMatchObject({ public: false, pricing: { input_cache_read: null } });
  });

  it("refuses name, engine, model_ref and context_length (400 explaining), and incoherent results", async () => {
    for (const field of ["name", "engine", "model_ref", "context_length"]) {
      const res = await call("PATCH", `/chutes/${chute.id}`, keyA, { [field]: field === "context_length" ? 1024 : "acme/other" });
      expect(res.status, field).toBe(400);
      expect(errorOf(res), field).toMatchObject({ code: "invalid_request", param: field });
      expect(errorOf(res).message).toMatch(/cannot be changed/);
    }
    const cases: [Record<string, unknown>, string | null][] = [
      [{ min_instances: 5 }, "min_instances"], // max is 3
      [{ max_instances: 0 }, "max_instances"],
      [{ max_output_tokens: 99_999 }, "max_output_tokens"],
      [{ gpu: { count: 0 } }, "gpu.min_vram_mb"], // still asks for 24000 MiB
      [{ pricing: { prompt: "lots" } }, "pricing.prompt"],
      [{ colour: "blue" }, "colour"],
      [{}, null],
    ];
    for (const [body, param] of cases) {
      const res = await call("PATCH", `/chutes/${chute.id}`, keyA, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(errorOf(res).param, JSON.stringify(body)).toBe(param);
    }
    expect((await call("PATCH", `/chutes/${chute.id}`, keyA, { gpu: { count: 0, min_vram_mb: 0 } })).status).toBe(200);
  });

  it("403 without chutes:manage, 404 for an unknown chute", async () => {
    expect((await call("PATCH", `/chutes/${chute.id}`, invokeOnlyA, { concurrency: 2 })).status).toBe(403);
    expect((await call("PATCH", "/chutes/chute-never-was", keyA, { concurrency: 2 })).status).toBe(404);
  });
});

describe("a chute served by a real agent", () => {
  let chute: Chute;

  beforeAll(async () => {
    chute = await create(keyA, newChute("acme/served", { concurrency: 2 }));
    upstream = await startUpstreamDouble({ tokens: 8, delayPerTokenMs: 2 });
    agent = await startAgent({
      gateway: gw.url,
      miner: gw.seed.miners[0]!,
      chute: chute.name,
      engine: { kind: "openai-upstream", baseURL: upstream.url, model: "double-model", parallel: 4 },
    });
    await waitForInstances(gw, chute.id, 1);
  });

  it("GET shows instances, in-flight requests, utilization, request counts, TTFT and tokens/s percentiles, the scaler", async () => {
    for (let i = 0; i < 3; i++) expect((await chat(keyB, chute.name)).status).toBe(200);
    // A request's slot goes back to the router a few ms after its answer (a request that took
    // the slot over is told to it up to 100 ms later): the view is read once it has them all.
    await expect.poll(async () => (await routerSnapshot(gw, chute.id)).instances.map((i) => [i.inflight, i.health.served])).toEqual([[0, 3]]);
    const live = await call<LiveChute>("GET", `/chutes/${chute.id}`, keyB);
    expect(live.status).toBe(200);
    expect(live.body).toMatchObject({ id: chute.id, name: "acme/served" });
    // The agent offers 4 parallel requests; the chute allows 2 per instance.
    expect(live.body.instances).toEqual([
      expect.objectContaining({ miner_id: gw.seed.miners[0]!.id, inflight: 0, capacity: 2, managed: false, health: expect.objectContaining({ served: 3 }) as unknown }),
    ]);
    expect(live.body.utilization).toMatchObject({ inflight: 0, capacity: 2, waiting: 0, now: 0 });
    expect(live.body.stats.requests).toBeGreaterThanOrEqual(3);
    expect(live.body.stats.refused).toBe(0);
    expect(live.body.stats.ttft_ms).toMatchObject({ samples: 3 });
    expect(live.body.stats.ttft_ms!.p50).toBeGreaterThanOrEqual(0);
    expect(live.body.stats.ttft_ms!.p99).toBeGreaterThanOrEqual(live.body.stats.ttft_ms!.p50);
    expect(live.body.stats.tokens_per_second).toMatchObject({ samples: 3 });
    expect(live.body.stats.tokens_per_second!.p50).toBeGreaterThan(0);
    expect(live.body.scaler).toMatchObject({ target: expect.any(Number) as unknown, pending: [] });
    // The listing is the configuration only.
    const inList = (await call<{ data: Record<string, unknown>[] }>("GET", "/chutes", keyA)).body.data.find((c) => c.id === chute.id)!;
    expect(inList).not.toHaveProperty("instances");
  });

  it("GET counts a request in flight", async () => {
    upstream!.set({ tokens: 50, delayPerTokenMs: 40 }); // a 2 s stream
    try {
      const res = await fetch(`${gw.baseURL}/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${keyA}`, "content-type": "application/json" },
        body: JSON.stringify({ model: chute.name, messages: [{ role: "user", content: "Hi" }], max_tokens: 50, stream: true }),
      });
      expect(res.status).toBe(200); // headers come with the first token
      const reader = res.body!.getReader();
      await reader.read();
      const live = await call<LiveChute>("GET", `/chutes/${encodeURIComponent(chute.name)}`, keyA);
      expect(live.body.instances[0]).toMatchObject({ inflight: 1, capacity: 2 });
      expect(live.body.utilization).toMatchObject({ inflight: 1, capacity: 2, now: 0.5 });
      while (!(await reader.read()).done);
    } finally {
      upstream!.set({ tokens: 8, delayPerTokenMs: 2 });
    }
    await expect.poll(async () => (await call<LiveChute>("GET", `/chutes/${chute.id}`, keyA)).body.utilization.inflight).toBe(0);
  });

  it("PATCH concurrency reaches the running instance at once, down and back up to what its agent offers", async () => {
    const capacity = async () => (await call<LiveChute>("GET", `/chutes/${chute.id}`, keyA)).body.instances[0]?.capacity;
    expect((await call("PATCH", `/chutes/${chute.id}`, keyA, { concurrency: 1 })).status).toBe(200);
    expect(await capacity()).toBe(1);
    // The agent offers 4: a chute that allows 8 gets 4.
    expect((await call("PATCH", `/chutes/${chute.id}`, keyA, { concurrency: 8 })).status).toBe(200);
    expect(await capacity()).toBe(4);
    expect((await call("PATCH", `/chutes/${chute.id}`, keyA, { concurrency: 2 })).status).toBe(200);
    expect(await capacity()).toBe(2);
  });

  it("DELETE drains its instances; the chute is then gone (404, unlisted, uncallable) and its name free again", async () => {
    expect((await call("DELETE", `/chutes/${chute.id}`, invokeOnlyA)).status).toBe(403);
    const res = await call("DELETE", `/chutes/${chute.id}`, keyA);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ id: chute.id, object: "chute.deleted", deleted: true, draining_instances: 1 });
    await agent!.waitFor((l) => l.event === "undeploy.draining" && l.chute === chute.name);

    expect((await call("GET", `/chutes/${chute.id}`, keyA)).status).toBe(404);
    expect((await call("GET", `/chutes/${encodeURIComponent(chute.name)}`, keyA)).status).toBe(404);
    expect((await call("DELETE", `/chutes/${chute.id}`, keyA)).status).toBe(404);
    expect((await call("PATCH", `/chutes/${chute.id}`, keyA, { concurrency: 1 })).status).toBe(404);
    expect(await listed(keyA)).not.toContain(chute.name);
    expect(await models(keyA)).not.toContain(chute.name);
    const called = await chat(keyA, chute.name);
    expect(called.status).toBe(404);
    expect(errorOf(called)).toMatchObject({ code: "model_not_found", param: "model" });

    const again = await create(keyA, newChute(chute.name));
    expect(again.id).not.toBe(chute.id);
    expect(await listed(keyA)).toContain(chute.name);
    const row = await gw.db.prepare("SELECT deleted_at FROM chutes WHERE id = ?").bind(chute.id).first<{ deleted_at: number | null }>();
    expect(row?.deleted_at).toBeGreaterThan(0);
  });

  it("B's own chutes: B may delete them; a deleted private chute stays invisible to everyone", async () => {
    const mine = await create(keyB, newChute("bco/short-lived", { public: false }));
    expect(mine.owned_by).toBe(accountB);
    const res = await call("DELETE", `/chutes/${encodeURIComponent(mine.name)}`, keyB);
    expect(res.body).toMatchObject({ id: mine.id, deleted: true, draining_instances: 0 });
    expect((await call("GET", `/chutes/${mine.id}`, keyB)).status).toBe(404);
    expect(errorOf(await chat(keyB, mine.name)).code).toBe("model_not_found");
  });
});
