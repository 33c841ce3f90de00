import { z } from "zod";
import { isHotkey } from "../../protocol/index.ts";
import { miners } from "../db/schema.ts";

/** Request shapes of the operator's miner registry API. Strict: a misspelt field is a 400. */

/** An SS58 address (prefix 42, checksum verified): a Bittensor hotkey or coldkey. */
export const Ss58Address = z.string().trim().refine(isHotkey, "must be an SS58 address (a Bittensor key, prefix 42)");

export const AddMinerBody = z.strictObject({
  hotkey: Ss58Address,
  name: z.string().trim().max(200).optional(),
  coldkey: Ss58Address.optional(),
});

export const BanBody = z.strictObject({
  /** Why, for the audit log. */
  reason: z.string().trim().max(500).optional(),
});

export const ListMinersQuery = z.strictObject({
  status: z.enum(miners.status.enumValues).optional(),
  source: z.enum(miners.source.enumValues).optional(),
});

export const ImportQuery = z.strictObject({
  /** Plan only: report what the import would change, change nothing. */
  dry_run: z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1").optional(),
});
