import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HttpLoadClient } from "../load/http-client.ts";
import { descendants } from "../proc.ts";
import { ManagedChild } from "./child.ts";
import { freePort, waitForHttp } from "./net.ts";
import type { RunningTarget } from "./types.ts";

export type Found = { ok: true; path: string; version: string } | { ok: false; reason: string };

function locate(): string | undefined {
  const which = spawnSync("sh", ["-c", "command -v nginx"], { encoding: "utf8" });
  const onPath = which.status === 0 ? which.stdout.trim() : "";
  if (onPath) return onPath;
  return ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"].find((p) => existsSync(p));
}

function version(path: string): string {
  const r = spawnSync(path, ["-v"], { encoding: "utf8" });
  return (r.stderr || r.stdout).trim().replace(/^nginx version:\s*/, "");
}

/** apt-get as root, or through passwordless sudo; returns the failure, if any. */
function aptGet(args: string[]): string | undefined {
  const root = process.getuid?.() === 0;
  const hasSudo = spawnSync("sh", ["-c", "command -v sudo"]).status === 0;
  if (!root && !hasSudo) return "not root and no sudo: cannot run apt-get";
  const [cmd, argv] = root ? ["apt-get", args] : ["sudo", ["-n", "apt-get", ...args]];
  const r = spawnSync(cmd, argv, { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, timeout: 300_000 });
  if (r.status === 0) return undefined;
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n").slice(-3).join(" | ");
  return `${cmd} ${argv.join(" ")} failed (${r.error?.message ?? `exit ${r.status}`}): ${out}`;
}

/** Finds nginx, installing the Debian package when it is missing (and `install` allows it). */
export function ensureNginx(install: boolean, log: (line: string) => void): Found {
  const found = locate();
  if (found) return { ok: true, path: found, version: version(found) };
  if (!install) return { ok: false, reason: "nginx is not installed (and installing was not allowed)" };
  log("nginx is missing: apt-get install -y nginx ...");
  let failure = aptGet(["install", "-y", "nginx"]);
  if (failure) {
    // A fresh machine may have no package lists yet.
    log("  install failed; apt-get update, then one more try ...");
    failure = aptGet(["update"]) ?? aptGet(["install", "-y", "nginx"]);
  }
  const installed = locate();
  if (installed) return { ok: true, path: installed, version: version(installed) };
  return { ok: false, reason: failure ?? "apt-get succeeded but no nginx binary was found" };
}

/** A port nginx listens on and the upstream it proxies to. */
interface Route {
  port: number;
  upstreamPort: number;
}

function proxy(name: string, route: Route): string {
  return `  upstream ${name} {
    server 127.0.0.1:${route.upstreamPort};
    keepalive 128;
  }
  server {
    listen 127.0.0.1:${route.port};
    location / {
      proxy_pass http://${name};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_cache off;
      proxy_read_timeout 60s;
    }
  }
`;
}

function config(dir: string, routes: readonly Route[]): string {
  // `user` only applies when the master runs as root: then keep workers as the current user too.
  const user = process.getuid?.() === 0 ? "user root;\n" : "";
  return `${user}worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${routes.map((r, i) => proxy(`synthetic${i}`, r)).join("")}}
`;
}

/**
 * nginx as a plain reverse proxy (SSE unbuffered) in front of the upstream, on a free port; with
 * `pacedUpstreamPort`, the same nginx (one worker) also proxies to the paced upstream on a second port.
 */
export async function startNginx(binary: string, upstreamPort: number, pacedUpstreamPort?: number): Promise<RunningTarget> {
  const dir = await mkdtemp(join(tmpdir(), "sluice-bench-nginx-"));
  const port = await freePort();
  const paced: Route | undefined = pacedUpstreamPort === undefined ? undefined : { port: await freePort(), upstreamPort: pacedUpstreamPort };
  const routes = [{ port, upstreamPort }, ...(paced ? [paced] : [])];
  const conf = join(dir, "nginx.conf");
  await writeFile(conf, config(dir, routes));
  execFileSync(binary, ["-t", "-q", "-p", dir, "-e", join(dir, "error.log"), "-c", conf], { stdio: "pipe" });
  const child = new ManagedChild("nginx", binary, ["-p", dir, "-e", join(dir, "error.log"), "-c", conf]);
  let alive = true;
  void child.exited.then(() => (alive = false));
  try {
    await waitForHttp(`http://127.0.0.1:${port}/v1/models`, 200, 10_000, () => alive);
  } catch (err) {
    await child.stop();
    throw new Error(`nginx did not come up: ${(err as Error).message}; ${child.lastOutput(500)}`);
  }
  const endpoint = (p: number) => ({ baseURL: `http://127.0.0.1:${p}/v1`, headers: {}, model: "synthetic" });
  const pids = [child.pid, ...descendants(child.pid)]; // the master and its worker
  return {
    client: (n, timeoutMs) => new HttpLoadClient(endpoint(port), n, timeoutMs),
    ...(paced ? { pacedClient: (n: number, timeoutMs: number) => new HttpLoadClient(endpoint(paced.port), n, timeoutMs) } : {}),
    gatewayPids: () => pids,
    notes: () => [],
    close: async () => {
      child.kill("SIGQUIT"); // graceful shutdown
      await child.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
