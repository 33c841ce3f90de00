import { Hono } from "hono";
import { findChute, listChutes } from "../catalog/index.ts";
import type { ChuteRecord } from "../catalog/types.ts";
import { usdPerToken } from "../chutes/pricing.ts";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";
import { apiKeyAuth } from "../middleware/auth/index.ts";
import { capabilitiesOf } from "../openai/capabilities.ts";

/** Prices are listed as USD per token, exact decimal strings (worker/chutes/pricing.ts). */
export { usdPerToken };

/** The OpenAI model object, extended with OpenRouter's provider fields. */
export function modelObject(chute: ChuteRecord, isReady: boolean) {
  const caps = capabilitiesOf(chute);
  return {
    id: chute.name,
    object: "model" as const,
    created: Math.floor(chute.createdAt / 1000),
    owned_by: chute.ownerAccountId,
    hugging_face_id: chute.huggingFaceId,
    name: chute.displayName ?? chute.name,
    description: chute.description,
    // Content parts other than text are refused by every chute (normalize.ts).
    input_modalities: ["text"],
    output_modalities: ["text"],
    quantization: chute.quantization,
    context_length: chute.contextLength,
    max_output_length: chute.maxOutputTokens,
    pricing: {
      prompt: usdPerToken(chute.promptPriceNanoPerM),
      completion: usdPerToken(chute.completionPriceNanoPerM),
      // Requests and images are not charged for.
      request: "0",
      image: "0",
      // Prompt tokens the engine reports as cached are charged this price (billing/pricing.ts).
      input_cache_read: usdPerToken(chute.cachedPromptPriceNanoPerM ?? chute.promptPriceNanoPerM),
    },
    supported_sampling_parameters: caps.samplingParameters,
    supported_features: caps.features,
    is_ready: isReady,
    deprecation_date: chute.deprecationDate,
  };
}

/** Whether an instance of the chute is connected now (its router's routing table). */
async function isReady(env: Env, chute: ChuteRecord): Promise<boolean> {
  try {
    const router = env.CHUTE_ROUTER.get(env.CHUTE_ROUTER.idFromName(chute.id));
    return (await router.snapshot()).instances.length > 0;
  } catch {
    return false;
  }
}

export const modelRoutes = new Hono<AppEnv>()
  .use(apiKeyAuth({ scope: "invoke" }))
  .get("/", async (c) => {
    const chutes = await listChutes(c.env.DB, c.get("apiKey").accountId);
    const ready = await Promise.all(chutes.map((chute) => isReady(c.env, chute)));
    return c.json({ object: "list", data: chutes.map((chute, i) => modelObject(chute, ready[i]!)) });
  })
  .get("/*", async (c) => {
    const name = decodeURIComponent(c.req.path.replace(/^.*?\/models\//, ""));
    const chute = await findChute(c.env.DB, name, c.get("apiKey").accountId);
    if (!chute) {
      throw new ApiError("model_not_found", `The model '${name}' does not exist.`, "model");
    }
    return c.json(modelObject(chute, await isReady(c.env, chute)));
  });
