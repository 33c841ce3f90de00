import { Hono } from "hono";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../errors.ts";

/** Where miner agents connect: a WebSocket upgrade handed to the miner's session object. */
export const minerRoutes = new Hono<AppEnv>().get("/connect", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    return c.json(
      { error: { message: "Expected a WebSocket upgrade.", type: "invalid_request_error", param: null, code: "upgrade_required" } },
      426,
    );
  }
  const minerId = c.req.query("miner") ?? "";
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(minerId)) {
    throw new ApiError("invalid_request", "Query parameter 'miner' must be a miner id.", "miner");
  }
  const session = c.env.MINER_SESSION.get(c.env.MINER_SESSION.idFromName(minerId));
  return session.fetch(c.req.raw);
});
