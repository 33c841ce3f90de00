import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { z } from "zod";
import { fromHex, hotkeyFromSeed, toHex, type Hotkey } from "../protocol/index.ts";

/**
 * The miner's hotkey file, in the shape of a Bittensor keyfile (unencrypted): `secretSeed` is
 * the 32-byte mini secret the sr25519 key derives from. Written with mode 0600.
 */
const KeyFile = z.object({
  secretSeed: z.string().regex(/^0x[0-9a-fA-F]{64}$/),
  publicKey: z.string().optional(),
  accountId: z.string().optional(),
  ss58Address: z.string().optional(),
});

export function keyFileJson(seed: Uint8Array): string {
  const key = hotkeyFromSeed(seed);
  const pub = `0x${toHex(key.publicKey)}`;
  return JSON.stringify({ accountId: pub, publicKey: pub, secretPhrase: null, secretSeed: `0x${toHex(seed)}`, ss58Address: key.address }, null, 2) + "\n";
}

/** Create a new hotkey file; refuses to overwrite one. */
export async function createHotkeyFile(path: string): Promise<Hotkey> {
  const seed = new Uint8Array(randomBytes(32));
  await writeFile(path, keyFileJson(seed), { mode: 0o600, flag: "wx" });
  return hotkeyFromSeed(seed);
}

export async function loadHotkey(path: string): Promise<Hotkey> {
  const info = await stat(path);
  if ((info.mode & 0o077) !== 0) {
    throw new Error(`Hotkey file ${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it.`);
  }
  let parsed: z.infer<typeof KeyFile>;
  try {
    parsed = KeyFile.parse(JSON.parse(await readFile(path, "utf8")));
  } catch (err) {
    throw new Error(`Hotkey file ${path} is not a keyfile with a secretSeed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const key = hotkeyFromSeed(fromHex(parsed.secretSeed)!);
  if (parsed.ss58Address && parsed.ss58Address !== key.address) {
    throw new Error(`Hotkey file ${path}: ss58Address does not match the secret seed.`);
  }
  return key;
}
