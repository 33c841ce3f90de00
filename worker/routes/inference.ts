import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { handleInference } from "../inference/handle.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";

const auth = apiKeyAuth({ scope: "invoke" });

export const inferenceRoutes = new Hono<AppEnv>()
  .post("/chat/completions", auth, (c) => handleInference(c, "chat"))
  .post("/completions", auth, (c) => handleInference(c, "completion"));
