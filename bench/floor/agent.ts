/**
 * The floor's agent (`npm run bench:floor`): one WebSocket to the harness Worker; each job's
 * body is POSTed to the synthetic upstream (keep-alive) and the upstream's answer sent back. As
 * the real agent does, it reads several jobs per message (one per line) and sends the answers
 * of one turn of its event loop as one message.
 * Usage: node --import tsx bench/floor/agent.ts <ws-url> <upstream /v1 url>
 */
import { Agent, request } from "node:http";
import WebSocket from "ws";

const [wsUrl, upstream] = process.argv.slice(2);
if (!wsUrl || !upstream) throw new Error("usage: agent.ts <ws-url> <upstream-url>");
const http = new Agent({ keepAlive: true, maxSockets: 64 });
const target = new URL(`${upstream.replace(/\/+$/, "")}/chat/completions`);
const ws = new WebSocket(wsUrl);
ws.on("open", () => console.log("FLOOR_AGENT_READY"));
ws.on("close", () => process.exit(0));
let answers: string[] = [];
const answer = (text: string): void => {
  if (answers.push(text) > 1) return;
  setImmediate(() => {
    ws.send(answers.join("\n"));
    answers = [];
  });
};
ws.on("message", (data) => {
  for (const line of String(data).split("\n")) job(line);
});

function job(line: string): void {
  const { id, body } = JSON.parse(line) as { id: number; body: unknown };
  const payload = JSON.stringify(body);
  const req = request(target, { method: "POST", agent: http, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } }, (res) => {
    let text = "";
    res.setEncoding("utf8");
    res.on("data", (d: string) => (text += d));
    res.on("end", () => answer(JSON.stringify({ id, answer: text })));
  });
  req.on("error", (err) => answer(JSON.stringify({ id, answer: JSON.stringify({ error: { message: String(err) } }) })));
  req.end(payload);
}
