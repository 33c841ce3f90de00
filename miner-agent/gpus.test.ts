import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { describe, expect, it } from "vitest";
import { detectGpus, parseNvidiaSmi } from "./gpus.ts";

// `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits` on an 8-GPU host.
const EIGHT_H100 = Array.from({ length: 8 }, (_, i) => `${i}, NVIDIA H100 80GB HBM3, 81559`).join("\n") + "\n\n";

describe("parseNvidiaSmi", () => {
  it("parses one GPU", () => {
    expect(parseNvidiaSmi("0, NVIDIA GeForce RTX 4090, 24564\n")).toEqual([{ index: 0, name: "NVIDIA GeForce RTX 4090", vramMb: 24564 }]);
  });

  it("parses several GPUs, mixed models, blank lines and CRLF", () => {
    const out = "\r\n0, NVIDIA A100-SXM4-80GB, 81920\r\n\r\n1, NVIDIA A100-SXM4-80GB, 81920\r\n  2 ,  Tesla T4 ,  15360  \r\n";
    expect(parseNvidiaSmi(out)).toEqual([
      { index: 0, name: "NVIDIA A100-SXM4-80GB", vramMb: 81920 },
      { index: 1, name: "NVIDIA A100-SXM4-80GB", vramMb: 81920 },
      { index: 2, name: "Tesla T4", vramMb: 15360 },
    ]);
    const eight = parseNvidiaSmi(EIGHT_H100);
    expect(eight.map((g) => g.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(eight.every((g) => g.name === "NVIDIA H100 80GB HBM3" && g.vramMb === 81559)).toBe(true);
  });

  it("skips lines that are not GPU rows (errors, [N/A] memory)", () => {
    const out = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n0, NVIDIA L4, [N/A]\n1, NVIDIA L4, 23034\n";
    expect(parseNvidiaSmi(out)).toEqual([{ index: 1, name: "NVIDIA L4", vramMb: 23034 }]);
    expect(parseNvidiaSmi("")).toEqual([]);
  });
});

describe("detectGpus", () => {
  it("asks nvidia-smi for index, name and memory", async () => {
    const calls: [string, string[]][] = [];
    const gpus = await detectGpus(async (cmd, args) => {
      calls.push([cmd, args]);
      return "0, NVIDIA L40S, 46068\n";
    });
    expect(gpus).toEqual([{ index: 0, name: "NVIDIA L40S", vramMb: 46068 }]);
    expect(calls).toEqual([["nvidia-smi", ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]]]);
  });

  it("finds no GPUs when nvidia-smi is absent or fails", async () => {
    const absent = Object.assign(new Error("spawn nvidia-smi ENOENT"), { code: "ENOENT" });
    expect(await detectGpus(() => Promise.reject(absent))).toEqual([]);
    expect(await detectGpus(() => Promise.reject(new Error("exit code 9")))).toEqual([]);
  });

  it("runs the real nvidia-smi: none on a host without it", async () => {
    const installed = (process.env.PATH ?? "").split(delimiter).some((d) => d && existsSync(join(d, "nvidia-smi")));
    const gpus = await detectGpus();
    if (!installed) expect(gpus).toEqual([]);
    else expect(gpus.every((g) => Number.isInteger(g.index) && g.vramMb > 0)).toBe(true);
  });
});
