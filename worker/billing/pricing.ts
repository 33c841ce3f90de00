import { choiceCount, type JobSpec } from "../../protocol/index.ts";
import type { ChuteRecord } from "../catalog/types.ts";

/**
 * Prices are integer nano-USD per million tokens (1 USD = 1e9 nano-USD), so $0.15 per million
 * tokens is 150_000_000 and one token at that price costs 150 nano-USD. Costs are computed in
 * BigInt and rounded up to whole nano-USD.
 */
export function costNano(
  chute: Pick<ChuteRecord, "promptPriceNanoPerM" | "completionPriceNanoPerM" | "cachedPromptPriceNanoPerM">,
  promptTokens: number,
  completionTokens: number,
  cachedPromptTokens = 0,
): number {
  const cached = Math.min(cachedPromptTokens, promptTokens);
  const cachedPrice = chute.cachedPromptPriceNanoPerM ?? chute.promptPriceNanoPerM;
  const total =
    BigInt(promptTokens - cached) * BigInt(chute.promptPriceNanoPerM) +
    BigInt(cached) * BigInt(cachedPrice) +
    BigInt(completionTokens) * BigInt(chute.completionPriceNanoPerM);
  return Number((total + 999_999n) / 1_000_000n);
}

/** A chute whose tokens cost nothing: no hold, but a daily request quota per account. */
export function isFree(chute: Pick<ChuteRecord, "promptPriceNanoPerM" | "completionPriceNanoPerM">): boolean {
  return chute.promptPriceNanoPerM === 0 && chute.completionPriceNanoPerM === 0;
}

/** Tokens a chat template adds around each message and the whole conversation, at most. */
const PER_MESSAGE_OVERHEAD = 16;
const PER_PROMPT_OVERHEAD = 64;
/**
 * Tool definitions: templates render each tool's schema into the prompt (as JSON or as
 * TypeScript-like declarations, at most about twice the JSON's size) inside fixed instructions.
 */
const TOOLS_TEXT_FACTOR = 2;
const TOOLS_OVERHEAD = 2048;

/**
 * An upper bound of the prompt's token count without the model's tokenizer: every token of a
 * byte-level tokenizer covers at least one byte of text, plus what the chat template adds. Used
 * for the worst-case hold and to clamp the miner's prompt count.
 */
export function promptTokenBound(spec: JobSpec): number {
  // Several prompts (a legacy prompt array) count each; `n` copies of a prompt count it once.
  if (spec.kind === "completion") return (spec.prompts ?? [spec.prompt]).reduce((n, p) => n + utf8Length(p) + PER_PROMPT_OVERHEAD, 0);
  let n = PER_PROMPT_OVERHEAD;
  for (const m of spec.messages) {
    n += utf8Length(m.content) + PER_MESSAGE_OVERHEAD + utf8Length(m.name ?? "") + utf8Length(m.toolCallId ?? "");
    for (const call of m.toolCalls ?? []) n += utf8Length(call.id) + utf8Length(call.name) + utf8Length(call.arguments) + PER_MESSAGE_OVERHEAD;
  }
  if (spec.tools) n += TOOLS_TEXT_FACTOR * utf8Length(JSON.stringify(spec.tools)) + TOOLS_OVERHEAD;
  return n;
}

/** The most tokens a request can generate: max_tokens for each of its choices. */
export function completionTokenBound(spec: JobSpec): number {
  return spec.params.maxTokens * choiceCount(spec);
}

/** The most a request can cost: its prompt bound at the prompt price plus its completion bound at the completion price. */
export function worstCaseNano(chute: ChuteRecord, spec: JobSpec): number {
  return costNano(chute, promptTokenBound(spec), completionTokenBound(spec));
}

/**
 * Completion tokens a chunk of text can plausibly hold: a miner may not claim more tokens than
 * the chunk has bytes (a token is at least one byte; an empty delta counts as one token).
 */
export function plausibleTokens(text: string, claimed: number): number {
  return Math.min(claimed, Math.max(1, utf8Length(text)));
}

export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** The serving miner's share of a charge (rounded down; the platform keeps the remainder). */
export function minerShareNano(chargedNano: number, shareBps: number): number {
  return Number((BigInt(chargedNano) * BigInt(Math.max(0, Math.min(10_000, Math.trunc(shareBps))))) / 10_000n);
}

/** nano-USD as a USD decimal string, exact (no floats): 1_500_000_000 -> "1.5". */
export function usdString(nano: number): string {
  const neg = nano < 0;
  const v = BigInt(Math.abs(nano));
  const whole = v / 1_000_000_000n;
  const frac = (v % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "");
  return `${neg ? "-" : ""}${whole}${frac ? `.${frac}` : ""}`;
}

/** A USD amount given as a decimal string or number ("12.5") in nano-USD, exactly; null if invalid. */
export function parseUsd(usd: string | number): number | null {
  const s = typeof usd === "number" ? String(usd) : usd.trim();
  const m = /^(\d{1,9})(?:\.(\d{1,9}))?$/.exec(s);
  if (!m) return null;
  return Number(BigInt(m[1]!) * 1_000_000_000n + BigInt((m[2] ?? "").padEnd(9, "0")));
}
