import { describe, expect, it } from "vitest";
import type { ChuteRecord } from "../catalog/types.ts";
import { costNano, minerShareNano, parseUsd, plausibleTokens, promptTokenBound, usdString, utf8Length, worstCaseNano } from "./pricing.ts";

const priced = (prompt: number, completion: number, cached: number | null = null) =>
  ({ promptPriceNanoPerM: prompt, completionPriceNanoPerM: completion, cachedPromptPriceNanoPerM: cached }) as ChuteRecord;

describe("costNano", () => {
  it("charges nano-USD per million tokens, rounded up, in integers", () => {
    expect(costNano(priced(100_000_000, 400_000_000), 1_000_000, 0)).toBe(100_000_000);
    expect(costNano(priced(100_000_000, 400_000_000), 10, 3)).toBe(1000 + 1200);
    expect(costNano(priced(1, 1), 1, 0)).toBe(1); // a fraction of a nano-dollar rounds up
    expect(costNano(priced(0, 0), 5000, 5000)).toBe(0);
  });

  it("stays exact past 2^53 intermediate products", () => {
    // $10,000 per million tokens x 2M tokens: the product 2e19 exceeds Number's exact range.
    expect(costNano(priced(10_000_000_000_000, 0), 2_000_000, 0)).toBe(20_000_000_000_000);
    expect(Number.isInteger(costNano(priced(123_456_789, 987_654_321), 777_777, 333_333))).toBe(true);
  });

  it("prices cached prompt tokens at the cached price, or the prompt price when none is set", () => {
    expect(costNano(priced(100_000_000, 0, 10_000_000), 100, 0, 60)).toBe(40 * 100 + 60 * 10);
    expect(costNano(priced(100_000_000, 0), 100, 0, 60)).toBe(100 * 100);
    expect(costNano(priced(100_000_000, 0, 0), 100, 0, 500)).toBe(0); // cached count capped at the prompt
  });
});

describe("holds and plausibility", () => {
  it("bounds the prompt by its UTF-8 bytes plus template overhead, and the hold by max_tokens", () => {
    const spec = { kind: "chat" as const, messages: [{ role: "user" as const, content: "héllo" }], params: { maxTokens: 10 } };
    expect(promptTokenBound(spec)).toBe(64 + 16 + 6);
    expect(worstCaseNano(priced(1_000_000_000, 2_000_000_000), spec)).toBe(86 * 1000 + 10 * 2000);
  });

  it("bounds tool definitions, tool calls and tool results too (templates render them into the prompt)", () => {
    const tools = [{ name: "get_weather", description: "Weather for a city", parameters: { type: "object", properties: { city: { type: "string" } } } }];
    const messages = [
      { role: "user" as const, content: "Weather in Paris?" },
      { role: "assistant" as const, content: "", toolCalls: [{ id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' }] },
      { role: "tool" as const, content: "18C and sunny", toolCallId: "call_1" },
    ];
    const plain = promptTokenBound({ kind: "chat", messages, params: { maxTokens: 1 } });
    expect(plain).toBe(64 + (17 + 16) + (0 + 16 + 6 + 11 + 16 + 16) + (13 + 16 + 6));
    const withTools = promptTokenBound({ kind: "chat", messages, tools, params: { maxTokens: 1 } });
    expect(withTools).toBe(plain + 2 * JSON.stringify(tools).length + 2048);
  });

  it("counts UTF-8 bytes exactly, surrogate pairs included", () => {
    for (const s of ["", "abc", "é", "€", "😀", "a😀b€é", "\ud800"]) expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
  });

  it("clamps a chunk's token claim to its bytes, at least one", () => {
    expect(plausibleTokens("abc", 2)).toBe(2);
    expect(plausibleTokens("abc", 50)).toBe(3);
    expect(plausibleTokens("", 7)).toBe(1);
  });
});

describe("money formats", () => {
  it("converts USD strings and nano-USD exactly", () => {
    expect(parseUsd("12.5")).toBe(12_500_000_000);
    expect(parseUsd(0.1)).toBe(100_000_000);
    expect(parseUsd("0.000000001")).toBe(1);
    expect(parseUsd("1.0000000001")).toBeNull();
    expect(parseUsd("-1")).toBeNull();
    expect(parseUsd("abc")).toBeNull();
    expect(usdString(12_500_000_000)).toBe("12.5");
    expect(usdString(1)).toBe("0.000000001");
    expect(usdString(0)).toBe("0");
  });

  it("gives the miner its share rounded down", () => {
    expect(minerShareNano(1001, 8000)).toBe(800);
    expect(minerShareNano(1000, 10_000)).toBe(1000);
    expect(minerShareNano(1000, 0)).toBe(0);
  });
});
