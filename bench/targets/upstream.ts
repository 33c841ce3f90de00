import { fileURLToPath } from "node:url";
import { HttpLoadClient } from "../load/http-client.ts";
import { ROOT } from "../../test/support/paths.ts";
import { ManagedChild } from "./child.ts";
import type { RunningTarget } from "./types.ts";

export interface Upstream {
  /** Base URL ending in /v1. */
  url: string;
  port: number;
  /** Row 1: the upstream called directly. */
  direct: RunningTarget;
  close(): Promise<void>;
}

const SERVER = fileURLToPath(new URL("./upstream-server.ts", import.meta.url));

/** Starts the synthetic upstream shared by the direct, nginx, Portkey and Sluice rows. */
export async function startUpstream(): Promise<Upstream> {
  const child = new ManagedChild("synthetic upstream", process.execPath, ["--import", "tsx", SERVER], { cwd: ROOT });
  const m = await child.waitFor(/UPSTREAM_URL=(\S+)/, 30_000).catch(async (err: unknown) => {
    await child.stop();
    throw err;
  });
  const url = m[1]!;
  const direct: RunningTarget = {
    client: (n, timeoutMs) => new HttpLoadClient({ baseURL: url, headers: {}, model: "synthetic" }, n, timeoutMs),
    gatewayPids: () => [],
    notes: () => [],
    close: async () => {},
  };
  return { url, port: Number(new URL(url).port), direct, close: () => child.stop() };
}
