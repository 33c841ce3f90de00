import { describe, expect, it } from "vitest";
import { parseUsdPerToken, usdPerToken } from "./pricing.ts";

describe("USD per token <-> nano-USD per million tokens", () => {
  it("parses exactly and round-trips", () => {
    expect(parseUsdPerToken("0")).toBe(0);
    expect(parseUsdPerToken("0.0000001")).toBe(100_000_000);
    expect(parseUsdPerToken("0.000000000000001")).toBe(1);
    expect(parseUsdPerToken(" 1.5 ")).toBe(1_500_000_000_000_000);
    for (const n of [0, 1, 150_000_000, 400_000_000, Number.MAX_SAFE_INTEGER]) expect(parseUsdPerToken(usdPerToken(n))).toBe(n);
  });

  it("refuses what is not an exact decimal of at most 15 places, negative, or beyond a safe integer", () => {
    for (const s of ["", "-0.1", "1e-7", "0.0000000000000001", ".5", "1.", "abc", "10", "9.007199254740992"]) {
      expect(parseUsdPerToken(s), s).toBeNull();
    }
  });
});
