import { afterEach, describe, expect, it, vi } from "vitest";
import { TtlCache } from "./ttl-cache.ts";

afterEach(() => vi.useRealTimers());

describe("TtlCache", () => {
  it("serves from cache until the TTL passes, then reloads", async () => {
    vi.useFakeTimers();
    const cache = new TtlCache<number>(1000);
    let loads = 0;
    const load = async () => ++loads;
    expect(await cache.get("k", load)).toBe(1);
    expect(await cache.get("k", load)).toBe(1);
    vi.advanceTimersByTime(1001);
    expect(await cache.get("k", load)).toBe(2);
    cache.delete("k");
    expect(await cache.get("k", load)).toBe(3);
  });

  it("stays bounded", async () => {
    const cache = new TtlCache<string>(60_000, 2);
    let loads = 0;
    for (const k of ["a", "b", "c", "a"]) await cache.get(k, async () => `${k}${++loads}`);
    expect(loads).toBe(4); // "a" was evicted when the bound was hit
  });
});
