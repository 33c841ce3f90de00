import { base58 } from "@scure/base";
import { blake2b } from "@noble/hashes/blake2.js";
import * as sr25519 from "@scure/sr25519";

/**
 * Miner identity: Bittensor-compatible sr25519 hotkeys, named by their SS58 address (network
 * prefix 42, the generic Substrate format Bittensor uses). Shared by the gateway (verifies) and
 * the agent (signs); runs in workerd and Node alike.
 */

/** The SS58 network prefix Bittensor addresses use. */
export const SS58_PREFIX = 42;
const SS58_CONTEXT = new TextEncoder().encode("SS58PRE");

/** What a signature is for, so a signature made for one purpose is useless for another. */
export type SignaturePurpose = "connect" | "earnings";

function checksum(payload: Uint8Array): Uint8Array {
  const data = new Uint8Array(SS58_CONTEXT.length + payload.length);
  data.set(SS58_CONTEXT);
  data.set(payload, SS58_CONTEXT.length);
  return blake2b(data, { dkLen: 64 }).subarray(0, 2);
}

/** The SS58 address of a 32-byte public key. */
export function ss58Encode(publicKey: Uint8Array, prefix = SS58_PREFIX): string {
  if (publicKey.length !== 32) throw new Error("an sr25519 public key has 32 bytes");
  if (prefix < 0 || prefix > 63) throw new Error("only simple (one-byte) SS58 prefixes are supported");
  const payload = new Uint8Array(33);
  payload[0] = prefix;
  payload.set(publicKey, 1);
  const out = new Uint8Array(35);
  out.set(payload);
  out.set(checksum(payload), 33);
  return base58.encode(out);
}

/** The public key an SS58 address names, or null when it is not a valid address with `prefix`. */
export function ss58Decode(address: string, prefix = SS58_PREFIX): Uint8Array | null {
  let bytes: Uint8Array;
  try {
    bytes = base58.decode(address);
  } catch {
    return null;
  }
  if (bytes.length !== 35 || bytes[0] !== prefix) return null;
  const sum = checksum(bytes.subarray(0, 33));
  if (sum[0] !== bytes[33] || sum[1] !== bytes[34]) return null;
  return bytes.slice(1, 33);
}

export const isHotkey = (address: string): boolean => ss58Decode(address) !== null;

/** The bytes a miner signs: `hotkey:nonce:purpose`. */
export function signedMessage(hotkey: string, nonce: string, purpose: SignaturePurpose): Uint8Array {
  return new TextEncoder().encode(`${hotkey}:${nonce}:${purpose}`);
}

export interface Hotkey {
  /** 64-byte sr25519 secret key. */
  secretKey: Uint8Array;
  publicKey: Uint8Array;
  address: string;
}

/** The hotkey derived from a 32-byte secret seed (Substrate's mini secret). */
export function hotkeyFromSeed(seed: Uint8Array): Hotkey {
  if (seed.length !== 32) throw new Error("a hotkey seed has 32 bytes");
  const secretKey = sr25519.secretFromSeed(seed);
  const publicKey = sr25519.getPublicKey(secretKey);
  return { secretKey, publicKey, address: ss58Encode(publicKey) };
}

/** Sign `hotkey:nonce:purpose`; the signature as hex. */
export function signNonce(key: Hotkey, nonce: string, purpose: SignaturePurpose): string {
  return toHex(sr25519.sign(key.secretKey, signedMessage(key.address, nonce, purpose)));
}

/** Whether `signature` (hex) is `hotkey`'s signature of `hotkey:nonce:purpose`. Never throws. */
export function verifyNonce(hotkey: string, nonce: string, purpose: SignaturePurpose, signature: string): boolean {
  const publicKey = ss58Decode(hotkey);
  const sig = fromHex(signature);
  if (!publicKey || !sig || sig.length !== 64) return false;
  try {
    return sr25519.verify(signedMessage(hotkey, nonce, purpose), sig, publicKey);
  } catch {
    return false;
  }
}

export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

export function fromHex(hex: string): Uint8Array | null {
  const h = hex.startsWith("0x") ? hex.slice(2) : hex;
  if (h.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(h)) return null;
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(i * 2, i * 2 + 2), 16);
  return out;
}
