import { app } from "./app.ts";
import { asRequest } from "./runtime/shared-wait.ts";

export { AccountLedger } from "../durable-objects/account-ledger.ts";
export { ChuteRouter } from "../durable-objects/chute-router.ts";
export { ChuteScaler } from "../durable-objects/chute-scaler.ts";
export { MinerSession } from "../durable-objects/miner-session.ts";

export default {
  fetch: (request, env, ctx) => asRequest(() => app.fetch(request, env, ctx)),
} satisfies ExportedHandler<Env>;
