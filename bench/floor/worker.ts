/**
 * The floor of a Sluice request in workerd, for `npm run bench:floor`: the same hops with none
 * of the work. A POST's JSON body goes by RPC to one Durable Object, which sends it to the agent
 * over a hibernated WebSocket and answers with the agent's reply; the Worker returns that reply.
 * Frames go as Sluice's do: the jobs of one turn in one message (FrameBatch, one per line), and
 * the agent's replies of one turn in one message.
 * No key, ledger, router, validation, record or log line.
 */
import { DurableObject } from "cloudflare:workers";
import { FrameBatch } from "../../durable-objects/frame-batch.ts";

interface Env {
  SESSION: DurableObjectNamespace<FloorSession>;
}

export class FloorSession extends DurableObject<Env> {
  private readonly pending = new Map<number, (answer: string) => void>();
  private seq = 0;
  private readonly out = new FrameBatch();

  /** The agent's WebSocket (GET /connect). */
  override async fetch(): Promise<Response> {
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server);
    return new Response(null, { status: 101, webSocket: client });
  }

  async call(body: unknown): Promise<string> {
    const ws = this.ctx.getWebSockets()[0];
    if (!ws) throw new Error("no agent is connected");
    const id = ++this.seq;
    const answer = new Promise<string>((resolve) => this.pending.set(id, resolve));
    this.out.add(ws, JSON.stringify({ id, body }), true);
    return answer;
  }

  override webSocketMessage(_ws: WebSocket, message: string | ArrayBuffer): void {
    const text = typeof message === "string" ? message : new TextDecoder().decode(message);
    for (const line of text.split("\n")) {
      const { id, answer } = JSON.parse(line) as { id: number; answer: string };
      this.pending.get(id)?.(answer);
      this.pending.delete(id);
    }
  }
}

export default {
  async fetch(request, env): Promise<Response> {
    const session = env.SESSION.get(env.SESSION.idFromName("floor"));
    if (new URL(request.url).pathname === "/connect") return session.fetch(request);
    const answer = await session.call(JSON.parse(await request.text()));
    return new Response(answer, { headers: { "content-type": "application/json" } });
  },
} satisfies ExportedHandler<Env>;
