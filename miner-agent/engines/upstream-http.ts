import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

// HTTP to an OpenAI-compatible upstream: pooled keep-alive connections, a JSON POST, a body read whole.

/**
 * Keep-alive connections to the upstream, one pool per engine (reused across jobs), and its
 * endpoints' URLs, each parsed once (not per request).
 */
export interface UpstreamPool {
  http: HttpAgent;
  https: HttpsAgent;
  targets: Map<string, RequestOptions>;
}

export function upstreamPool(maxSockets: number): UpstreamPool {
  return { http: new HttpAgent({ keepAlive: true, maxSockets }), https: new HttpsAgent({ keepAlive: true, maxSockets }), targets: new Map() };
}

/** Where `url` is, as node:http takes it (parsed once per pool). */
function targetOf(pool: UpstreamPool, url: string): RequestOptions {
  let target = pool.targets.get(url);
  if (!target) {
    const u = new URL(url);
    const secure = u.protocol === "https:";
    target = {
      protocol: u.protocol,
      hostname: u.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: u.port || (secure ? 443 : 80),
      path: `${u.pathname}${u.search}`,
      ...(u.username || u.password ? { auth: `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}` } : {}),
      agent: secure ? pool.https : pool.http,
    };
    pool.targets.set(url, target);
  }
  return target;
}

/**
 * POST a JSON body with node:http on a pooled keep-alive connection (the per-request cost of
 * fetch was the agent's largest after the socket's own). `response` resolves with the response
 * head; destroying `req` stops the request (and a response being read).
 */
export function post(pool: UpstreamPool, url: string, headers: Record<string, string>, body: string): { req: ClientRequest; response: Promise<IncomingMessage> } {
  const target = targetOf(pool, url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  let req!: ClientRequest;
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req = send({ ...target, method: "POST", headers: { ...headers, "content-length": Buffer.byteLength(body) } }, resolve);
    req.on("error", reject);
    req.end(body);
  });
  return { req, response };
}

export async function readText(res: IncomingMessage): Promise<string> {
  res.setEncoding("utf8");
  let text = "";
  for await (const piece of res) text += piece as string;
  return text;
}
