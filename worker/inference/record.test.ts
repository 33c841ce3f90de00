import { describe, expect, it } from "vitest";
import type { ChuteRecord } from "../catalog/types.ts";
import { costNano } from "./record.ts";

const priced = (prompt: number, completion: number) =>
  ({ promptPriceNanoPerM: prompt, completionPriceNanoPerM: completion }) as ChuteRecord;

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
});
