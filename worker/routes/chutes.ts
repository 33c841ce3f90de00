import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono, type Context } from "hono";
import { forgetChute, listChutes, visibleTo } from "../catalog/index.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { applyConcurrency, liveState, pokeScaler, retireChute } from "../chutes/live.ts";
import { CreateChuteBody, DEFAULT_MAX_OUTPUT_TOKENS, IMMUTABLE_FIELDS, PatchChuteBody } from "../chutes/schemas.ts";
import { chuteObject, liveFields, parseGpuTypes } from "../chutes/shape.ts";
import { chutes } from "../db/schema.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { parseBody, readJson } from "../http/json.ts";
import { log } from "../log.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

/**
 * Deploying chutes: an account creates, lists, inspects, changes and deletes its chutes.
 * Creating, changing and deleting take the `chutes:manage` scope; reading takes `invoke`, the
 * scope that lets a key see and call the same chutes through `/v1/models` and inference.
 *
 * A chute is addressed by its id (`chute-…`) or by its name (`acme/qwen3-8b`, as a path or
 * URL-encoded). Another account's private chute, a deleted chute and a chute that never existed
 * are the same 404; changing or deleting another account's public chute is a 404 too.
 */

type Ctx = Context<AppEnv>;

function notFound(ref: string): ApiError {
  return new ApiError("not_found", `No chute '${ref}'.`, "id");
}

/** The live chute `ref` (an id, or a name: names have a '/', ids do not), as the caller may see it. */
async function visibleChute(c: Ctx, ref: string): Promise<ChuteRecord> {
  const byRef = ref.includes("/") ? eq(chutes.name, ref) : eq(chutes.id, ref);
  const row = await drizzle(c.env.DB)
    .select()
    .from(chutes)
    .where(and(byRef, isNull(chutes.deletedAt)))
    .get();
  if (!row || !visibleTo(row, c.get("apiKey").accountId)) throw notFound(ref);
  return row;
}

/** The live chute `ref` if the caller's account owns it. */
async function ownedChute(c: Ctx, ref: string): Promise<ChuteRecord> {
  const row = await visibleChute(c, ref);
  if (row.ownerAccountId !== c.get("apiKey").accountId) throw notFound(ref);
  return row;
}

/** The name is taken (D1's unique index over live chutes' names). */
function isNameTaken(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (/UNIQUE constraint failed: chutes\.name/.test(e.message)) return true;
  }
  return false;
}

function audit(c: Ctx, event: string, chute: Pick<ChuteRecord, "id" | "name">, fields: Record<string, unknown> = {}): void {
  log.info(event, { component: "chutes", requestId: c.get("requestId"), accountId: c.get("apiKey").accountId, chuteId: chute.id, name: chute.name, ...fields });
}

const refOf = (c: Ctx) => c.req.param("ref") ?? "";

export const chuteRoutes = new Hono<AppEnv>()
  .post("/", apiKeyAuth({ scope: "chutes:manage" }), async (c) => {
    const body = parseBody(CreateChuteBody, await readJson(c));
    const accountId = c.get("apiKey").accountId;
    const values: typeof chutes.$inferInsert = {
      id: `chute-${crypto.randomUUID()}`,
      name: body.name,
      ownerAccountId: accountId,
      modelRef: body.model_ref,
      engine: body.engine,
      contextLength: body.context_length,
      maxOutputTokens: body.max_output_tokens ?? Math.min(DEFAULT_MAX_OUTPUT_TOKENS, body.context_length),
      promptPriceNanoPerM: body.pricing.prompt,
      completionPriceNanoPerM: body.pricing.completion,
      cachedPromptPriceNanoPerM: body.pricing.input_cache_read ?? null,
      concurrency: body.concurrency,
      minInstances: body.min_instances,
      maxInstances: body.max_instances,
      public: body.public,
      displayName: body.display_name ?? null,
      description: body.description ?? "",
      huggingFaceId: body.hugging_face_id ?? null,
      quantization: body.quantization ?? "unknown",
      deprecationDate: body.deprecation_date ?? null,
      gpuCount: body.gpu.count,
      minVramMb: body.gpu.min_vram_mb,
      gpuTypes: JSON.stringify(body.gpu.types),
    };
    let row: ChuteRecord;
    try {
      row = await drizzle(c.env.DB).insert(chutes).values(values).returning().get();
    } catch (err) {
      if (isNameTaken(err)) throw new ApiError("conflict", `A chute named '${body.name}' already exists; pick another name.`, "name");
      throw err;
    }
    // A lookup of this name before it existed may be cached as "no such model".
    forgetChute(row.name);
    await pokeScaler(c.env, row.id);
    audit(c, "chute.create", row, { engine: row.engine, public: row.public, minInstances: row.minInstances, maxInstances: row.maxInstances });
    return c.json(chuteObject(row), 201);
  })

  .get("/", apiKeyAuth({ scope: "invoke" }), async (c) => {
    const rows = await listChutes(c.env.DB, c.get("apiKey").accountId);
    return c.json({ object: "list", data: rows.map(chuteObject) });
  })

  .get("/:ref{.+}", apiKeyAuth({ scope: "invoke" }), async (c) => {
    const row = await visibleChute(c, refOf(c));
    const { snapshot, scaler } = await liveState(c.env, row.id);
    return c.json({ ...chuteObject(row), ...liveFields(snapshot, scaler) });
  })

  .patch("/:ref{.+}", apiKeyAuth({ scope: "chutes:manage" }), async (c) => {
    const json = await readJson(c);
    if (typeof json === "object" && json !== null) {
      const fixed = IMMUTABLE_FIELDS.find((f) => Object.hasOwn(json, f));
      if (fixed) {
        throw new ApiError(
          "invalid_request",
          `'${fixed}' cannot be changed: it defines what the chute serves. Create a new chute (and delete this one) instead.`,
          fixed,
        );
      }
    }
    const body = parseBody(PatchChuteBody, json);
    const row = await ownedChute(c, refOf(c));
    const set = changes(row, body);
    const updated = await drizzle(c.env.DB)
      .update(chutes)
      .set({ ...set, updatedAt: Date.now() })
      .where(and(eq(chutes.id, row.id), isNull(chutes.deletedAt)))
      .returning()
      .get();
    if (!updated) throw notFound(refOf(c)); // deleted meanwhile
    // This isolate sees the change at once; others when their chute cache expires (10 s).
    forgetChute(updated.name);
    const rescale = ["minInstances", "maxInstances", "gpuCount", "minVramMb", "gpuTypes", "concurrency"].some((k) => Object.hasOwn(set, k));
    if (Object.hasOwn(set, "concurrency")) await applyConcurrency(c.env, updated.id, updated.concurrency);
    if (rescale) await pokeScaler(c.env, updated.id);
    audit(c, "chute.update", updated, { fields: Object.keys(set) });
    return c.json(chuteObject(updated));
  })

  .delete("/:ref{.+}", apiKeyAuth({ scope: "chutes:manage" }), async (c) => {
    const row = await ownedChute(c, refOf(c));
    // Drain first, then mark deleted: if marking fails the owner can delete again (retire is
    // idempotent), whereas a deleted chute whose instances were never drained could not be.
    const draining = await retireChute(c.env, row.id, `chute ${row.name} deleted by its owner`);
    const now = Date.now();
    const deleted = await drizzle(c.env.DB)
      .update(chutes)
      .set({ deletedAt: now, updatedAt: now })
      .where(and(eq(chutes.id, row.id), isNull(chutes.deletedAt)))
      .returning({ id: chutes.id })
      .get();
    if (!deleted) throw notFound(refOf(c)); // deleted by a concurrent request
    // Uncallable at once in this isolate; in others within the chute cache's TTL (10 s).
    forgetChute(row.name);
    audit(c, "chute.delete", row, { drainingInstances: draining });
    return c.json({ id: row.id, object: "chute.deleted" as const, deleted: true, draining_instances: draining });
  });

/** The columns a PATCH sets, after checking the result against the chute's other fields. */
function changes(row: ChuteRecord, body: PatchChuteBody): Partial<typeof chutes.$inferInsert> {
  const set: Partial<typeof chutes.$inferInsert> = {};
  if (body.pricing?.prompt !== undefined) set.promptPriceNanoPerM = body.pricing.prompt;
  if (body.pricing?.completion !== undefined) set.completionPriceNanoPerM = body.pricing.completion;
  if (body.pricing?.input_cache_read !== undefined) set.cachedPromptPriceNanoPerM = body.pricing.input_cache_read;
  if (body.concurrency !== undefined) set.concurrency = body.concurrency;
  if (body.min_instances !== undefined) set.minInstances = body.min_instances;
  if (body.max_instances !== undefined) set.maxInstances = body.max_instances;
  if (body.public !== undefined) set.public = body.public;
  if (body.max_output_tokens !== undefined) {
    if (body.max_output_tokens > row.contextLength) {
      throw new ApiError("invalid_request", `Invalid parameter 'max_output_tokens': must be at most context_length (${row.contextLength}).`, "max_output_tokens");
    }
    set.maxOutputTokens = body.max_output_tokens;
  }
  if (body.display_name !== undefined) set.displayName = body.display_name;
  if (body.description !== undefined) set.description = body.description;
  if (body.hugging_face_id !== undefined) set.huggingFaceId = body.hugging_face_id;
  if (body.quantization !== undefined) set.quantization = body.quantization;
  if (body.deprecation_date !== undefined) set.deprecationDate = body.deprecation_date;

  const min = set.minInstances ?? row.minInstances;
  const max = set.maxInstances ?? row.maxInstances;
  if (min > max) {
    const param = body.min_instances !== undefined ? "min_instances" : "max_instances";
    throw new ApiError("invalid_request", `Invalid parameter '${param}': min_instances (${min}) must be at most max_instances (${max}).`, param);
  }

  if (body.gpu) {
    const gpu = { count: body.gpu.count ?? row.gpuCount, minVramMb: body.gpu.min_vram_mb ?? row.minVramMb, types: body.gpu.types };
    if (body.gpu.count !== undefined) set.gpuCount = gpu.count;
    if (body.gpu.min_vram_mb !== undefined) set.minVramMb = gpu.minVramMb;
    if (gpu.types !== undefined) set.gpuTypes = JSON.stringify(gpu.types);
    const hasTypes = (gpu.types ?? parseGpuTypes(row.gpuTypes)).length > 0;
    if (gpu.count === 0 && (gpu.minVramMb > 0 || hasTypes)) {
      const param = gpu.minVramMb > 0 ? "gpu.min_vram_mb" : "gpu.types";
      throw new ApiError("invalid_request", `Invalid parameter '${param}': needs gpu.count of at least 1 (0 runs on CPU).`, param);
    }
  }
  return set;
}
