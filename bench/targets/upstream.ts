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

/**
 * Starts a synthetic upstream shared by the direct, nginx, Portkey and Sluice rows: with no delays
 * (the default), or pacing each stream's tokens `delayPerTokenMs` apart (the paced phase).
 */
export async function startUpstream(opts: { delayPerTokenMs?: number } = {}): Promise<Upstream> {
  const paced = opts.delayPerTokenMs ? [`--delay-per-token-ms=${opts.delayPerTokenMs}`] : [];
  const name = paced.length > 0 ? "paced synthetic upstream" : "synthetic upstream";
  const child = new ManagedChild(name, process.execPath, ["--import", "tsx", SERVER, ...paced], { cwd: ROOT });
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
