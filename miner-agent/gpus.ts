import { execFile } from "node:child_process";
import type { Gpu } from "../protocol/index.ts";

/**
 * The host's NVIDIA GPUs, from `nvidia-smi` (none when it is not installed or fails).
 * `run` is the command runner, replaceable so the parser can be tested on captured output.
 */
export async function detectGpus(
  run: (cmd: string, args: string[]) => Promise<string> = execText,
): Promise<Gpu[]> {
  let out: string;
  try {
    out = await run("nvidia-smi", ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]);
  } catch {
    return [];
  }
  return parseNvidiaSmi(out);
}

/** Parses `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(out: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const line of out.split(/\r?\n/)) {
    const m = /^\s*(\d+)\s*,\s*(.+?)\s*,\s*(\d+)\s*$/.exec(line);
    if (m) gpus.push({ index: Number(m[1]), name: m[2]!, vramMb: Number(m[3]) });
  }
  return gpus;
}

function execText(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}
