import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { verifyNonce, type AgentFrame } from "../protocol/index.ts";
import { miners } from "../worker/db/schema.ts";

/**
 * The connect handshake's check: the agent answered this socket's own nonce, while it is
 * fresh, with a valid sr25519 signature of `hotkey:nonce:connect` by the hotkey it names,
 * and that hotkey is registered and active. A nonce is good for one socket and one answer,
 * so a recorded answer replayed on another connection fails.
 */
export type AuthVerdict = { ok: true } | { ok: false; reason: "wrong miner" | "replayed nonce" | "stale nonce" | "bad signature" | "not registered" | "banned" | "deregistered" };

export async function verifyAgentAuth(
  db: D1Database,
  expected: { minerId: string; nonce: string; issuedAt: number },
  frame: Extract<AgentFrame, { type: "auth" }>,
  nonceTtlMs: number,
  now = Date.now(),
): Promise<AuthVerdict> {
  if (frame.minerId !== expected.minerId) return { ok: false, reason: "wrong miner" };
  if (frame.nonce !== expected.nonce) return { ok: false, reason: "replayed nonce" };
  if (now - expected.issuedAt > nonceTtlMs) return { ok: false, reason: "stale nonce" };
  if (!verifyNonce(frame.minerId, frame.nonce, "connect", frame.credential.signature)) return { ok: false, reason: "bad signature" };
  const row = await drizzle(db).select({ status: miners.status }).from(miners).where(eq(miners.id, frame.minerId)).get();
  if (!row) return { ok: false, reason: "not registered" };
  if (row.status !== "active") return { ok: false, reason: row.status };
  return { ok: true };
}

/** Record the connected agent's session and what it reported, for the scaler's search for miners. */
export async function recordSession(
  db: D1Database,
  minerId: string,
  sessionId: string,
  frame: Extract<AgentFrame, { type: "auth" }>,
): Promise<void> {
  await drizzle(db)
    .update(miners)
    .set({ sessionId, lastSeenAt: Date.now(), gpus: JSON.stringify(frame.gpus), acceptsOffers: (frame.offers?.engines.length ?? 0) > 0 })
    .where(eq(miners.id, minerId));
}

/** Clear the session when it ends (unless a newer session replaced it). */
export async function clearSession(db: D1Database, minerId: string, sessionId: string): Promise<void> {
  await drizzle(db)
    .update(miners)
    .set({ sessionId: null, lastSeenAt: Date.now() })
    .where(and(eq(miners.id, minerId), eq(miners.sessionId, sessionId)));
}
