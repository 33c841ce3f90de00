import { readFile } from "node:fs/promises";
import { Miniflare } from "miniflare";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// callFresh inside workerd, against a Durable Object whose first call resets it (ctx.abort()),
// as a code update or a lost connection does to a call in flight.
const WORKER = `
import { DurableObject } from "cloudflare:workers";
import { callFresh } from "./stub-retry.js";

export class Ledger extends DurableObject {
  async settle() {
    const n = (await this.ctx.storage.get("calls")) ?? 0;
    await this.ctx.storage.put("calls", n + 1);
    await this.ctx.storage.sync();
    if (n === 0) this.ctx.abort("reset while settling");
    return "settled on call " + (n + 1);
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const fresh = () => env.LEDGER.get(env.LEDGER.idFromName(url.searchParams.get("object")));
    const first = fresh();
    const stub = url.searchParams.get("stubs") === "fresh" ? fresh : () => first;
    try {
      return new Response(await callFresh(stub, (s) => s.settle(), 3, 1));
    } catch (err) {
      return new Response("failed: " + err.message);
    }
  },
};`;

let mf: Miniflare;
beforeAll(async () => {
  const source = await readFile(new URL("./stub-retry.ts", import.meta.url), "utf8");
  const helper = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
  mf = new Miniflare({
    modules: [
      { type: "ESModule", path: "index.js", contents: WORKER },
      { type: "ESModule", path: "stub-retry.js", contents: helper },
    ],
    compatibilityDate: "2025-12-01",
    durableObjects: { LEDGER: "Ledger" },
  });
  await mf.ready;
});
afterAll(async () => {
  await mf?.dispose();
});

describe("callFresh", () => {
  it("gets through a reset: the next attempt runs on a new stub", async () => {
    const res = await mf.dispatchFetch("http://gateway/?object=a&stubs=fresh");
    expect(await res.text()).toBe("settled on call 2");
  });

  it("needs the new stub: the runtime fails every call on a stub that saw the reset", async () => {
    const res = await mf.dispatchFetch("http://gateway/?object=b&stubs=same");
    expect(await res.text()).toBe("failed: reset while settling");
  });
});
