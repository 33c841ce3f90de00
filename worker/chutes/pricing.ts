/**
 * Prices at the API are USD per token as exact decimal strings (OpenRouter's unit, what
 * `/v1/models` lists); D1 keeps integer nano-USD per million tokens. 1 USD per token = 1e9
 * nano-USD x 1e6 tokens = 1e15, so one is the other shifted 15 decimal places: exact, no floats.
 */

const SCALE = 10n ** 15n;

/** 100_000_000 nano-USD per million tokens -> "0.0000001". */
export function usdPerToken(nanoPerMillion: number): string {
  const v = BigInt(nanoPerMillion);
  const frac = (v % SCALE).toString().padStart(15, "0").replace(/0+$/, "");
  return `${v / SCALE}${frac ? `.${frac}` : ""}`;
}

/** "0.0000001" -> 100_000_000 nano-USD per million tokens; null unless a decimal with at most 15 places whose nano-USD per million is a safe integer (up to about $9 per token). */
export function parseUsdPerToken(s: string): number | null {
  const m = /^(\d{1,3})(?:\.(\d{1,15}))?$/.exec(s.trim());
  if (!m) return null;
  const v = BigInt(m[1]!) * SCALE + BigInt((m[2] ?? "").padEnd(15, "0"));
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : null;
}
