import type { DeploySpec, Gpu } from "./messages.ts";

/** GPUs (indices) for an instance needing `need`, chosen among the free ones; null when there are too few. */
export function pickGpus(need: DeploySpec["gpu"], inventory: Gpu[], used: ReadonlySet<number>): number[] | null {
  if (need.count === 0) return [];
  const types = need.types.map((t) => t.toLowerCase());
  const fit = inventory.filter(
    (g) =>
      !used.has(g.index) &&
      g.vramMb >= need.minVramMb &&
      (types.length === 0 || types.some((t) => g.name.toLowerCase().includes(t))),
  );
  if (fit.length < need.count) return null;
  // Smallest sufficient GPUs first, so larger ones stay free for chutes that need them.
  return fit
    .sort((a, b) => a.vramMb - b.vramMb || a.index - b.index)
    .slice(0, need.count)
    .map((g) => g.index);
}
