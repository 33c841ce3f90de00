import { readFile, writeFile } from "node:fs/promises";

const KEEP_PREVIOUS = 4;
const HEADER = `# Sluice benchmark results

Written by \`npm run bench\` (bench/run.ts): the latest run first, then up to ${KEEP_PREVIOUS} earlier ones, so a
change's before and after sit side by side. Numbers from different runs are comparable only on a
quiet machine: each run records its load average.`;

/** Puts `section` (one run) at the top of the results file, keeping the most recent earlier runs. */
export async function writeResults(path: string, section: string): Promise<void> {
  let earlier: string[] = [];
  try {
    earlier = (await readFile(path, "utf8")).split(/^(?=## Run of )/m).slice(1).map((s) => s.trim());
  } catch { /* first run */ }
  await writeFile(path, `${[HEADER, section.trim(), ...earlier.slice(0, KEEP_PREVIOUS)].join("\n\n")}\n`);
}
