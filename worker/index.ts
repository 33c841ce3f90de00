import { app } from "./app.ts";

export { AccountLedger } from "../durable-objects/account-ledger.ts";
export { ChuteRouter } from "../durable-objects/chute-router.ts";
export { ChuteScaler } from "../durable-objects/chute-scaler.ts";
export { MinerSession } from "../durable-objects/miner-session.ts";

export default app satisfies ExportedHandler<Env>;
