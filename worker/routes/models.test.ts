import { describe, expect, it } from "vitest";
import { usdPerToken } from "./models.ts";

describe("usdPerToken", () => {
  it("shifts nano-USD per million tokens 15 places, exactly", () => {
    expect(usdPerToken(0)).toBe("0");
    expect(usdPerToken(1)).toBe("0.000000000000001");
    expect(usdPerToken(150_000_000)).toBe("0.00000015");
    expect(usdPerToken(1_500_000_000_000_000)).toBe("1.5");
    // Beyond float precision: 2^53 + 1 nano-USD per million tokens.
    expect(usdPerToken(Number.MAX_SAFE_INTEGER)).toBe("9.007199254740991");
  });
});
