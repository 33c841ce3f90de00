import { Hono } from "hono";
import { findChute, listChutes } from "../catalog/index.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

function modelObject(chute: ChuteRecord) {
  return {
    id: chute.name,
    object: "model" as const,
    created: Math.floor(chute.createdAt / 1000),
    owned_by: chute.ownerAccountId,
    context_length: chute.contextLength,
    max_output_length: chute.maxOutputTokens,
  };
}

export const modelRoutes = new Hono<AppEnv>()
  .use(apiKeyAuth({ scope: "invoke" }))
  .get("/", async (c) => {
    const chutes = await listChutes(c.env.DB, c.get("apiKey").accountId);
    return c.json({ object: "list", data: chutes.map(modelObject) });
  })
  .get("/*", async (c) => {
    const name = decodeURIComponent(c.req.path.replace(/^.*?\/models\//, ""));
    const chute = await findChute(c.env.DB, name);
    if (!chute || (!chute.public && chute.ownerAccountId !== c.get("apiKey").accountId)) {
      throw new ApiError("model_not_found", `The model '${name}' does not exist.`, "model");
    }
    return c.json(modelObject(chute));
  });
