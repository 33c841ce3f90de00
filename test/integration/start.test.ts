import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../bench/targets/net.ts";
import { ROOT } from "../support/paths.ts";

/**
 * `npm start` as a user runs it (scripts/dev.ts: wrangler dev, its local D1 and Durable Objects,
 * the miner agent on the tiny model), on a port and state directory of its own.
 */
describe("npm start", () => {
  let dev: ChildProcess;
  let output = "";
  let state: string;
  let exited: Promise<number | null>;

  beforeAll(async () => {
    state = await mkdtemp(join(tmpdir(), "sluice-start-"));
    const port = await freePort();
    dev = spawn(process.execPath, ["--import", "tsx", `${ROOT}/scripts/dev.ts`], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(port), SLUICE_STATE_DIR: state },
      stdio: ["ignore", "pipe", "pipe"],
    });
    exited = new Promise((resolve) => dev.once("exit", (code) => resolve(code)));
    dev.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    dev.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not come up:\n${output}`)), 150_000);
      const check = () => {
        if (output.includes("Sluice is running.")) {
          clearTimeout(timer);
          resolve();
        }
      };
      dev.stdout!.on("data", check);
      void exited.then((code) => reject(new Error(`npm start exited (${code}):\n${output}`)));
    });
  }, 180_000);

  afterAll(async () => {
    // SIGTERM stops what it started (wrangler dev, the agent); SIGKILL only if it does not.
    if (dev && dev.exitCode === null) {
      dev.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (dev.exitCode === null) dev.kill("SIGKILL");
    }
    await rm(state, { recursive: true, force: true });
  }, 30_000);

  it("serves the tiny model, gives every hold back once quiet, and Ctrl-C stops everything", async () => {
    const settings = JSON.parse(await readFile(join(state, "dev.json"), "utf8")) as { baseURL: string; apiKey: string; model: string };
    expect(output).toContain(`curl ${settings.baseURL}/chat/completions`);
    const client = new OpenAI({ baseURL: settings.baseURL, apiKey: settings.apiKey });
    for (let i = 0; i < 3; i++) {
      const chat = await client.chat.completions.create({ model: settings.model, messages: [{ role: "user", content: "Hello!" }], max_tokens: 8 });
      expect(chat.choices[0]!.message.content).toEqual(expect.any(String));
      expect(chat.usage!.completion_tokens).toBeGreaterThan(0);
    }
    // The startup probes and the requests above were admitted one after another: whatever slice
    // of the balance they were admitted from goes back to the account within moments.
    const account = async () =>
      (await (await fetch(`${settings.baseURL}/account`, { headers: { authorization: `Bearer ${settings.apiKey}` } })).json()) as { held_nano: number; holds_in_flight: number };
    await expect.poll(account, { timeout: 5_000 }).toMatchObject({ held_nano: 0, holds_in_flight: 0 });

    dev.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(output).toContain('"event":"agent.stopped"');
    expect(output).not.toMatch(/exited \(.*\); stopping/);
  }, 60_000);
});
