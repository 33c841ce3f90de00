import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { handleInference } from "../inference/handle.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

/** POST /v1/embeddings: an `embedding` job on the same path as completions (hold, dispatch, settle). */
export const embeddingRoutes = new Hono<AppEnv>().post("/", apiKeyAuth({ scope: "invoke" }), (c) => handleInference(c, "embedding"));
