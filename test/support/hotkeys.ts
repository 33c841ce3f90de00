import { PROTOCOL_VERSION, fromHex, hotkeyFromSeed, signNonce, type Hotkey } from "../../protocol/index.ts";
import type { SeedMiner } from "../../scripts/lib/seed.ts";

/** The seeded miner's hotkey. */
export function hotkeyOf(miner: SeedMiner): Hotkey {
  return hotkeyFromSeed(fromHex(miner.secretSeed)!);
}

/** The auth frame a real agent sends in answer to `nonce` (for raw-WebSocket tests). */
export function authFrame(miner: SeedMiner, nonce: string): string {
  return JSON.stringify({
    type: "auth",
    v: PROTOCOL_VERSION,
    minerId: miner.id,
    nonce,
    credential: { type: "sr25519", signature: signNonce(hotkeyOf(miner), nonce, "connect") },
  });
}

/** Headers a miner signs an HTTP request with (e.g. its earnings), with a fresh nonce. */
export function signedHeaders(miner: SeedMiner, purpose: "earnings" = "earnings"): Record<string, string> {
  const nonce = `${Date.now()}.${Math.random().toString(16).slice(2, 18).padEnd(16, "0")}`;
  return {
    "x-sluice-hotkey": miner.id,
    "x-sluice-nonce": nonce,
    "x-sluice-signature": signNonce(hotkeyOf(miner), nonce, purpose),
  };
}
