import type { Context } from "hono";
import { log } from "../log.ts";
import type { AdminEnv } from "./auth.ts";

/** One canonical line per operator action, naming the operator (the admin token's `sub`). */
export function audit(c: Context<AdminEnv>, action: string, fields: Record<string, unknown>): void {
  log.info("admin.action", { component: "admin", action, operator: c.get("admin").sub, requestId: c.get("requestId"), ...fields });
}
