import { eq, lt } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { createMiddleware } from "hono/factory";
import { isHotkey, verifyNonce, type SignaturePurpose } from "../../../protocol/index.ts";
import { minerNonces, miners } from "../../db/schema.ts";
import type { AppEnv } from "../../env.ts";
import { ApiError } from "../../errors.ts";
import { log } from "../../log.ts";

export type MinerStatus = (typeof miners.status.enumValues)[number];

/** The miner that signed the request. */
export interface SignedMiner {
  hotkey: string;
  status: MinerStatus;
}

export type MinerSignatureEnv = {
  Bindings: AppEnv["Bindings"];
  Variables: AppEnv["Variables"] & { miner: SignedMiner };
};

export interface MinerSignatureOptions {
  /** What the signature is for; a signature made for another purpose is refused. */
  purpose: SignaturePurpose;
  /** The route parameter naming the miner (its hotkey) the request is about; default `id`. */
  param?: string;
  /** How far the nonce's timestamp may be from the gateway's clock, either way; default 60 s. */
  windowMs?: number;
  /** Registry statuses allowed through; default active only. */
  statuses?: readonly MinerStatus[];
}

/** `<unix ms>.<random>`: the random part 16 to 64 url-safe characters (the agent sends 16 hex). */
const NONCE = /^(\d{1,15})\.[A-Za-z0-9_-]{16,64}$/;
const SIGNATURE = /^(0x)?[0-9a-fA-F]{128}$/;

type Refusal = "unsigned" | "wrong miner" | "malformed nonce" | "stale nonce" | "bad signature" | "not registered" | MinerStatus | "replayed nonce";

/**
 * Authenticates an HTTP request signed by a miner's hotkey, and sets `c.var.miner`:
 * `X-Sluice-Hotkey` (the SS58 address, equal to the route's miner), `X-Sluice-Nonce`
 * (`<unix ms>.<random>`, its time within `windowMs` of now) and `X-Sluice-Signature` (hex
 * sr25519 signature of `hotkey:nonce:purpose`). The hotkey must be registered with an allowed
 * status, and each nonce is accepted once: it is recorded in `miner_nonces` until its time
 * leaves the window, so a replayed request is refused. Every refusal is a 401
 * `invalid_api_key` naming the reason.
 */
export const minerSignature = (options: MinerSignatureOptions) => {
  const param = options.param ?? "id";
  const windowMs = options.windowMs ?? 60_000;
  const statuses: readonly MinerStatus[] = options.statuses ?? ["active"];
  const payload = (hotkey: string, nonce: string) => `'${hotkey}:${nonce}:${options.purpose}'`;

  return createMiddleware<MinerSignatureEnv>(async function minerSignature(c, next) {
    const hotkey = c.req.header("x-sluice-hotkey") ?? "";
    const nonce = c.req.header("x-sluice-nonce") ?? "";
    const signature = c.req.header("x-sluice-signature") ?? "";
    const refused = (reason: Refusal, detail: string): ApiError => {
      log.warn("miner.signature_refused", { component: "miner-signature", requestId: c.get("requestId"), minerId: hotkey, purpose: options.purpose, reason });
      return new ApiError("invalid_api_key", `The signed request was refused: ${reason} (${detail}).`);
    };
    if (!hotkey || !nonce || !signature) {
      throw refused("unsigned", `sign it with the miner's hotkey: X-Sluice-Hotkey, X-Sluice-Nonce ('<unix ms>.<random>') and X-Sluice-Signature (hex sr25519 signature of '<hotkey>:<nonce>:${options.purpose}')`);
    }
    if (hotkey !== c.req.param(param) || !isHotkey(hotkey)) throw refused("wrong miner", "X-Sluice-Hotkey must be the SS58 hotkey of the miner in the URL");
    const time = NONCE.exec(nonce)?.[1];
    if (time === undefined) throw refused("malformed nonce", "X-Sluice-Nonce must be '<unix ms>.<16 to 64 random url-safe characters>'");
    const now = Date.now();
    const issuedAt = Number(time);
    if (Math.abs(now - issuedAt) > windowMs) throw refused("stale nonce", `its time must be within ${windowMs / 1000} s of the gateway's clock; sign a fresh one`);
    if (!SIGNATURE.test(signature) || !verifyNonce(hotkey, nonce, options.purpose, signature)) {
      throw refused("bad signature", `X-Sluice-Signature must be this hotkey's sr25519 signature of ${payload(hotkey, nonce)}, in hex`);
    }
    const db = drizzle(c.env.DB);
    const row = await db.select({ status: miners.status }).from(miners).where(eq(miners.id, hotkey)).get();
    if (!row) throw refused("not registered", "this hotkey is not in the miner registry");
    if (!statuses.includes(row.status)) throw refused(row.status, `this miner is ${row.status}`);
    // Kept until its time leaves the window (it could not pass after that); expired ones go in the same batch.
    const [, recorded] = await db.batch([
      db.delete(minerNonces).where(lt(minerNonces.expiresAt, now)),
      db.insert(minerNonces).values({ minerId: hotkey, nonce, expiresAt: issuedAt + windowMs }).onConflictDoNothing().returning({ nonce: minerNonces.nonce }),
    ]);
    if (recorded.length === 0) throw refused("replayed nonce", "this nonce was already used; sign each request with a fresh one");
    c.set("miner", { hotkey, status: row.status });
    await next();
  });
};
