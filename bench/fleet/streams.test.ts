import { describe, expect, it } from "vitest";
import { peakOverlap } from "./streams.ts";

describe("peakOverlap", () => {
  it("counts intervals open at the same moment; one ending as another starts does not overlap it", () => {
    expect(peakOverlap([])).toBe(0);
    expect(peakOverlap([{ from: 0, to: 10 }, { from: 10, to: 20 }])).toBe(1);
    expect(peakOverlap([{ from: 0, to: 10 }, { from: 5, to: 20 }, { from: 6, to: 7 }, { from: 8, to: 30 }])).toBe(3);
  });
});
