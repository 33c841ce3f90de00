import type { Context } from "hono";
import type { z } from "zod";
import { ApiError } from "../errors.ts";
import { parseBody } from "../inference/normalize.ts";

/** The request's JSON body validated by `schema`: 415 for another media type, 400 for bad JSON or fields. */
export async function jsonBody<T>(c: Context, schema: z.ZodType<T>): Promise<T> {
  const type = c.req.header("content-type") ?? "";
  if (type && !type.toLowerCase().includes("json")) {
    throw new ApiError("unsupported_media_type", "The request body must be JSON (content-type: application/json).");
  }
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw new ApiError("invalid_json", "We could not parse the JSON body of your request.");
  }
  return parseBody(schema, body);
}
