import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from "vitest";
import { pidAlive as alive } from "../../test/support/processes.ts";
import { log } from "../log.ts";
import { LineSplitter, launchProcess } from "./launched-process.ts";

let spy: MockInstance;
beforeEach(() => {
  spy = vi.spyOn(log, "info").mockImplementation(() => undefined);
});
afterEach(() => spy.mockRestore());


describe("LineSplitter", () => {
  it("splits pieces into lines on \\n, \\r\\n and \\r, without colours or blank lines", () => {
    const lines: string[] = [];
    const s = new LineSplitter((l) => lines.push(l));
    s.push("INFO one\nINFO t");
    s.push("wo\r\n\r\n\x1b[32mgreen\x1b[0m\nprogress 10%\rprogress 20%\r");
    s.push("last without newline");
    s.end();
    expect(lines).toEqual(["INFO one", "INFO two", "green", "progress 10%", "progress 20%", "last without newline"]);
  });

  it("bounds a line: the first `max` chars are kept, the rest of that line dropped", () => {
    const lines: [string, boolean][] = [];
    const s = new LineSplitter((l, truncated) => lines.push([l, truncated]), 10);
    s.push("0123456789abc");
    s.push("def still the same line\nnext\n");
    expect(lines).toEqual([["0123456789", true], ["next", false]]);
  });
});

describe("launchProcess", () => {
  it("stops the whole process group, workers included", async () => {
    // The leader starts a worker in the background and prints its pid.
    const proc = await launchProcess(["sh", "-c", "sleep 60 & echo worker=$!; wait"], process.env, {});
    let worker = 0;
    for (let i = 0; i < 100 && !worker; i++) {
      worker = Number(/worker=(\d+)/.exec(proc.tail().join("\n"))?.[1] ?? 0);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(alive(worker)).toBe(true);
    await proc.stop(2_000);
    expect(alive(proc.pid)).toBe(false);
    expect(alive(worker)).toBe(false);
  });

  it("SIGKILLs a process that ignores SIGTERM after the grace period", async () => {
    const proc = await launchProcess([process.execPath, "-e", "process.on('SIGTERM',()=>console.log('ignored'));console.log('up');setInterval(()=>{},1000)"], process.env, {});
    for (let i = 0; i < 100 && proc.tail().length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const t0 = Date.now();
    expect(await proc.stop(300)).toEqual({ code: null, signal: "SIGKILL" });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(proc.tail()).toEqual(["up", "ignored"]);
    expect(alive(proc.pid)).toBe(false);
  });

  it("logs every output line with the given fields", async () => {
    const proc = await launchProcess(["sh", "-c", "echo out; echo err >&2; exit 4"], process.env, { engine: "command", model: "m" });
    expect(await proc.exited).toEqual({ code: 4, signal: null });
    expect(proc.tail()).toEqual(["err"]); // stderr first
    const calls = spy.mock.calls.filter(([e]) => e === "engine.output").map(([, f]) => f);
    expect(calls).toEqual(expect.arrayContaining([
      { engine: "command", model: "m", pid: proc.pid, stream: "stdout", line: "out" },
      { engine: "command", model: "m", pid: proc.pid, stream: "stderr", line: "err" },
    ]));
  });
});
