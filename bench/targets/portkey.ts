import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { HttpLoadClient } from "../load/http-client.ts";
import { ManagedChild } from "./child.ts";
import { freePort, waitForHttp } from "./net.ts";
import type { RunningTarget } from "./types.ts";

const require = createRequire(import.meta.url);

/** The installed @portkey-ai/gateway: its version and its Node server entry. */
export function portkeyPackage(): { version: string; server: string } {
  const manifest = require.resolve("@portkey-ai/gateway/package.json");
  const { version } = require(manifest) as { version: string };
  return { version, server: join(dirname(manifest), "build", "start-server.js") };
}

/** What the gateway printed that looks like a failure (first lines only). */
function errorLines(output: string): string[] {
  const lines = output.split("\n").map((l) => l.trim()).filter((l) => /error|exception|failed/i.test(l) && !l.startsWith("at "));
  return [...new Set(lines)].slice(0, 2).map((l) => (l.length > 200 ? `${l.slice(0, 200)}...` : l));
}

/**
 * Portkey's open-source gateway (its Node server, one process) proxying to the upstream as the
 * `openai` provider with a custom host.
 */
export async function startPortkey(upstreamURL: string): Promise<RunningTarget> {
  const { server } = portkeyPackage();
  const port = await freePort();
  const child = new ManagedChild("portkey", process.execPath, [server, `--port=${port}`, "--headless"], {
    env: { ...process.env, NODE_ENV: "production" },
  });
  let alive = true;
  void child.exited.then(() => (alive = false));
  try {
    await waitForHttp(`http://127.0.0.1:${port}/`, 200, 20_000, () => alive);
  } catch (err) {
    await child.stop();
    throw new Error(`Portkey did not come up: ${(err as Error).message}; ${child.lastOutput(500)}`);
  }
  const headers = {
    authorization: "Bearer sk-bench-unused",
    "x-portkey-provider": "openai",
    "x-portkey-custom-host": upstreamURL,
  };
  const baseURL = `http://127.0.0.1:${port}/v1`;
  return {
    client: (n, timeoutMs) => new HttpLoadClient({ baseURL, headers, model: "synthetic" }, n, timeoutMs),
    gatewayPids: () => [child.pid],
    notes: () => errorLines(child.firstOutput(8192)).map((l) => `Portkey logged: ${l}`),
    close: () => child.stop(),
  };
}
