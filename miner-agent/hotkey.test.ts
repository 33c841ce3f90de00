import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fromHex, hotkeyFromSeed, signNonce, ss58Decode, ss58Encode, toHex, verifyNonce } from "../protocol/index.ts";
import { createHotkeyFile, keyFileJson, loadHotkey } from "./hotkey.ts";

// Substrate's well-known dev account //Alice: its mini secret seed and sr25519 public key.
const ALICE_SEED = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
const ALICE_PUBLIC = "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d";
const ALICE_SS58 = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-hotkey-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("ss58", () => {
  it("encodes Alice's public key to her well-known address, and decodes it back", () => {
    expect(ss58Encode(fromHex(ALICE_PUBLIC)!)).toBe(ALICE_SS58);
    expect(`0x${toHex(ss58Decode(ALICE_SS58)!)}`).toBe(ALICE_PUBLIC);
  });

  it("derives Alice's key from her secret seed as Substrate does", () => {
    const key = hotkeyFromSeed(fromHex(ALICE_SEED)!);
    expect(`0x${toHex(key.publicKey)}`).toBe(ALICE_PUBLIC);
    expect(key.address).toBe(ALICE_SS58);
  });

  it("refuses a corrupted address", () => {
    const corrupted = ALICE_SS58.slice(0, -1) + (ALICE_SS58.endsWith("Y") ? "Z" : "Y");
    expect(ss58Decode(corrupted)).toBeNull();
    expect(ss58Decode("not base58 0OIl")).toBeNull();
  });
});

describe("signatures", () => {
  const key = hotkeyFromSeed(fromHex(ALICE_SEED)!);
  const nonce = "1764000000000.0123456789abcdef";

  it("verify what was signed", () => {
    expect(verifyNonce(key.address, nonce, "earnings", signNonce(key, nonce, "earnings"))).toBe(true);
  });

  it("fail for another nonce, purpose, hotkey, or a tampered signature", () => {
    const sig = signNonce(key, nonce, "earnings");
    const other = hotkeyFromSeed(new Uint8Array(32).fill(7));
    expect(verifyNonce(key.address, `${nonce}0`, "earnings", sig)).toBe(false);
    expect(verifyNonce(key.address, nonce, "connect", sig)).toBe(false);
    expect(verifyNonce(other.address, nonce, "earnings", sig)).toBe(false);
    const flipped = (parseInt(sig.slice(0, 2), 16) ^ 1).toString(16).padStart(2, "0") + sig.slice(2);
    expect(verifyNonce(key.address, nonce, "earnings", flipped)).toBe(false);
    expect(verifyNonce(key.address, nonce, "earnings", sig.slice(2))).toBe(false);
    expect(verifyNonce(key.address, nonce, "earnings", "zz")).toBe(false);
  });
});

describe("hotkey files", () => {
  it("are created with mode 0600 and load back to the same address", async () => {
    const path = join(dir, "hotkey.json");
    const created = await createHotkeyFile(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const loaded = await loadHotkey(path);
    expect(loaded.address).toBe(created.address);
    expect(loaded.publicKey).toEqual(created.publicKey);
    const json = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    expect(json).toMatchObject({ ss58Address: created.address, publicKey: `0x${toHex(created.publicKey)}` });
    expect(json.secretSeed).toMatch(/^0x[0-9a-f]{64}$/);
  });

  it("are never overwritten by createHotkeyFile", async () => {
    const path = join(dir, "hotkey.json");
    const first = await createHotkeyFile(path);
    await expect(createHotkeyFile(path)).rejects.toThrow(/EEXIST/);
    expect((await loadHotkey(path)).address).toBe(first.address);
  });

  it("load Bittensor-style keyfiles (Alice's seed -> Alice's address)", async () => {
    const path = join(dir, "alice.json");
    await writeFile(path, keyFileJson(fromHex(ALICE_SEED)!), { mode: 0o600 });
    expect((await loadHotkey(path)).address).toBe(ALICE_SS58);
  });

  it("refuse a file readable by others", async () => {
    const path = join(dir, "hotkey.json");
    await createHotkeyFile(path);
    await chmod(path, 0o644);
    await expect(loadHotkey(path)).rejects.toThrow(/readable by others \(mode 644\); chmod 600 it/);
  });

  it("refuse an ss58Address that does not match the seed", async () => {
    const path = join(dir, "hotkey.json");
    const json = JSON.parse(keyFileJson(fromHex(ALICE_SEED)!)) as Record<string, unknown>;
    await writeFile(path, JSON.stringify({ ...json, ss58Address: hotkeyFromSeed(new Uint8Array(32).fill(1)).address }), { mode: 0o600 });
    await expect(loadHotkey(path)).rejects.toThrow(/ss58Address does not match the secret seed/);
  });

  it("refuse a file without a valid secretSeed", async () => {
    const path = join(dir, "hotkey.json");
    await writeFile(path, JSON.stringify({ secretSeed: "0x1234" }), { mode: 0o600 });
    await expect(loadHotkey(path)).rejects.toThrow(/not a keyfile with a secretSeed/);
    await writeFile(path, "not json", { mode: 0o600 });
    await expect(loadHotkey(path)).rejects.toThrow(/not a keyfile with a secretSeed/);
  });
});
