import type { Context } from "hono";
import type { z } from "zod";
import { ApiError } from "../errors.ts";
import { bodyRefusal } from "./refusal.ts";

/**
 * The request's JSON body: 415 for another media type, 400 `invalid_json` when it does not
 * parse. `emptyBody` is what an empty body means, for endpoints whose fields are all optional.
 */
export async function readJson(c: Context, opts: { emptyBody?: unknown } = {}): Promise<unknown> {
  const type = c.req.header("content-type") ?? "";
  if (type && !type.toLowerCase().includes("json")) {
    throw new ApiError("unsupported_media_type", "The request body must be JSON (content-type: application/json).");
  }
  const text = await c.req.text();
  if (opts.emptyBody !== undefined && text.trim() === "") return opts.emptyBody;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError("invalid_json", "We could not parse the JSON body of your request.");
  }
}

/** `schema.parse(body)` as an OpenAI-shaped 400 whose `param` names the field (see bodyRefusal). */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ApiError("invalid_request", "The request body must be a JSON object.");
  }
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  throw bodyRefusal(r.error, body, schema);
}

/** The request's JSON body validated by `schema` (400 with `param` for a bad field). */
export async function jsonBody<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  return parseBody(schema, await readJson(c));
}
