import { randomBytes } from "node:crypto";
import { z } from "zod";
import { signNonce, type Hotkey } from "../protocol/index.ts";

/**
 * What the gateway says this miner earned: `GET {gateway}/v1/miners/{hotkey}/earnings`,
 * authenticated with the hotkey (a fresh nonce signed for the purpose "earnings").
 */

export type Earnings =
  | { available: true; totalNano: number; totalUsd: string; todayNano: number; todayUsd: string; day: string }
  | { available: false; reason: string };

const Amount = z.object({ earnings_nano: z.number().int().nonnegative(), earnings_usd: z.string() });
const EarningsBody = Amount.extend({ days: z.array(Amount.extend({ day: z.string() })).default([]) });
const ErrorBody = z.object({ error: z.object({ message: z.string() }) });

const TIMEOUT_MS = 5_000;

/** `<unix ms>.<16 random hex chars>`: the gateway refuses stale and reused nonces. */
export function earningsNonce(now = Date.now()): string {
  return `${now}.${randomBytes(8).toString("hex")}`;
}

export function earningsHeaders(key: Hotkey, nonce = earningsNonce()): Record<string, string> {
  return {
    "X-Sluice-Hotkey": key.address,
    "X-Sluice-Nonce": nonce,
    "X-Sluice-Signature": signNonce(key, nonce, "earnings"),
  };
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === "TimeoutError") return `no answer within ${TIMEOUT_MS / 1000} s`;
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause ? `${err.message} (${cause})` : err.message;
}

/** Never throws: an unreachable or refusing gateway is an `available: false` with the reason. */
export async function fetchEarnings(
  gateway: string,
  key: Hotkey,
  opts: { fetch?: typeof fetch; now?: Date; timeoutMs?: number } = {},
): Promise<Earnings> {
  const url = `${gateway.replace(/\/+$/, "")}/v1/miners/${encodeURIComponent(key.address)}/earnings`;
  const now = opts.now ?? new Date();
  let res: Response;
  try {
    res = await (opts.fetch ?? fetch)(url, {
      headers: { accept: "application/json", ...earningsHeaders(key, earningsNonce(now.getTime())) },
      signal: AbortSignal.timeout(opts.timeoutMs ?? TIMEOUT_MS),
    });
  } catch (err) {
    return { available: false, reason: `gateway unreachable: ${describe(err)}` };
  }
  let json: unknown;
  try {
    json = await res.json();
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const refused = ErrorBody.safeParse(json);
    return { available: false, reason: `gateway answered HTTP ${res.status}${refused.success ? `: ${refused.data.error.message}` : ""}` };
  }
  const body = EarningsBody.safeParse(json);
  if (!body.success) return { available: false, reason: "the gateway's answer is not an earnings report" };
  // The gateway groups by UTC day.
  const day = now.toISOString().slice(0, 10);
  const today = body.data.days.find((d) => d.day === day);
  return {
    available: true,
    totalNano: body.data.earnings_nano,
    totalUsd: body.data.earnings_usd,
    todayNano: today?.earnings_nano ?? 0,
    todayUsd: today?.earnings_usd ?? "0",
    day,
  };
}
