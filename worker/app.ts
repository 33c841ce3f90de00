import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { AppEnv } from "./env.ts";
import { numberVar } from "./env.ts";
import { ApiError, handleError } from "./errors.ts";
import { openCors, requestId } from "./middleware/response-headers/index.ts";
import { accountRoutes } from "./routes/account.ts";
import { adminRoutes } from "./routes/admin.ts";
import { chuteRoutes } from "./routes/chutes.ts";
import { embeddingRoutes } from "./routes/embeddings.ts";
import { inferenceRoutes } from "./routes/inference.ts";
import { keyRoutes } from "./routes/keys.ts";
import { minerRoutes } from "./routes/miners.ts";
import { modelRoutes } from "./routes/models.ts";
import { paymentRoutes } from "./routes/payments.ts";

const DEFAULT_MAX_BODY_BYTES = 1 << 20;

export const app = new Hono<AppEnv>();

app.use(requestId());
// Kept before anything replaces c.req.raw (body-limit rebuilds the Request, and a rebuilt
// Request's signal does not follow the client's connection).
app.use(async (c, next) => {
  c.set("clientGone", c.req.raw.signal);
  await next();
});
app.use("/v1/*", openCors({ maxAge: 86400 }));
app.use("/v1/*", (c, next) =>
  bodyLimit({
    maxSize: numberVar(c.env.MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
    onError: () => {
      throw new ApiError("payload_too_large", "The request body is too large.");
    },
  })(c, next),
);

app.get("/health", (c) => c.json({ ok: true }));
app.route("/v1/models", modelRoutes);
app.route("/v1/miners", minerRoutes);
app.route("/v1", inferenceRoutes);
app.route("/v1/embeddings", embeddingRoutes);
app.route("/v1", accountRoutes);
app.route("/v1/keys", keyRoutes);
app.route("/v1/chutes", chuteRoutes);
app.route("/v1/admin", adminRoutes);
app.route("/v1/payments", paymentRoutes);

app.notFound((c) => {
  throw new ApiError("not_found", `Unknown request URL: ${c.req.method} ${c.req.path}.`);
});
app.onError(handleError);
