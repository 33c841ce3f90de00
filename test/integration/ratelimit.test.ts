import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newApiKey, sha256Hex, TINY_CHUTE } from "../../scripts/lib/seed.ts";
import { promptTokenBound } from "../../worker/billing/pricing.ts";
import { ledgerOf } from "../support/ledger.ts";
import { startPlatform, type Platform } from "../support/platform.ts";

/**
 * Per-key rate limits, requests and tokens per minute, counted on the account's ledger in the
 * same call that places the hold, with OpenAI's x-ratelimit-* headers and 429 + Retry-After.
 */
let p: Platform;

beforeAll(async () => {
  p = await startPlatform({ vars: { RATE_LIMIT_RPM: "5", RATE_LIMIT_TPM: "0" } });
});
afterAll(() => p?.close());

/** Windows are whole minutes: start a test early enough in one that it cannot roll over midway. */
async function freshWindow(): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 15_000) await new Promise((r) => setTimeout(r, left + 50));
}

async function keyWith(limits: { rpm?: number; tpm?: number }): Promise<string> {
  const key = newApiKey();
  await p.gw.db
    .prepare("INSERT INTO api_keys (id, account_id, prefix, hash, scopes, rpm_limit, tpm_limit) VALUES (?, ?, ?, ?, '[\"invoke\"]', ?, ?)")
    .bind(`key-${crypto.randomUUID()}`, p.gw.seed.accountId, key.slice(0, 14), sha256Hex(key), limits.rpm ?? null, limits.tpm ?? null)
    .run();
  return key;
}

function complete(key: string, body: Record<string, unknown> = {}): Promise<Response> {
  return fetch(`${p.gw.baseURL}/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: TINY_CHUTE.name, prompt: "Once upon a time", max_tokens: 2, ...body }),
  });
}

describe("per-key rate limits", () => {
  it("count requests per minute with x-ratelimit headers, then 429 with Retry-After", async () => {
    await freshWindow();
    const key = await keyWith({});
    for (let i = 1; i <= 5; i++) {
      const res = await complete(key);
      expect(res.status).toBe(200);
      expect(res.headers.get("x-ratelimit-limit-requests")).toBe("5");
      expect(res.headers.get("x-ratelimit-remaining-requests")).toBe(String(5 - i));
      expect(res.headers.get("x-ratelimit-reset-requests")).toMatch(/^\d+(\.\d)?m?s$/);
      expect(res.headers.get("x-ratelimit-limit-tokens")).toBeNull(); // unlimited here
      await res.text();
    }
    const refused = await complete(key);
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    const body = (await refused.json()) as { error: { code: string; type: string; message: string } };
    expect(body.error).toMatchObject({ code: "rate_limit_exceeded", type: "rate_limit_error" });
    expect(body.error.message).toMatch(/5 requests per minute/);
    // The limit is the key's, not the account's: another key of the same account is not affected.
    expect((await complete(p.gw.seed.apiKey)).status).toBe(200);
  });

  it("a key's own limits override the default, and a refused request holds nothing", async () => {
    await freshWindow();
    const key = await keyWith({ rpm: 2 });
    expect((await complete(key)).status).toBe(200);
    const second = await complete(key);
    expect(second.headers.get("x-ratelimit-remaining-requests")).toBe("0");
    expect((await complete(key)).status).toBe(429);
  });

  it("under concurrency (a busy key is admitted from the isolate's slice of its limit) the limit is exact: 30 at once against 20 per minute", async () => {
    await freshWindow();
    const key = await keyWith({ rpm: 20 });
    const statuses = await Promise.all(
      Array.from({ length: 30 }, async () => {
        const res = await complete(key);
        await res.text();
        return res.status;
      }),
    );
    expect(statuses.filter((s) => s === 200)).toHaveLength(20);
    expect(statuses.filter((s) => s === 429)).toHaveLength(10);
    // Grants the isolate held and did not use go back when it is quiet: the minute stays used up.
    await new Promise((r) => setTimeout(r, 600));
    const after = await complete(key);
    expect(after.status).toBe(429);
    expect(after.headers.get("x-ratelimit-remaining-requests")).toBe("0");
  });

  it("count tokens per minute: the worst case at admission, corrected to the real usage when the request settles", async () => {
    await freshWindow();
    const key = await keyWith({ tpm: 1_000 });
    const tooBig = await complete(key, { max_tokens: 1_000 });
    expect(tooBig.status).toBe(429);
    expect(((await tooBig.json()) as { error: { message: string } }).error.message).toMatch(/more than this API key's limit of 1000 tokens per minute/);

    const worst = (maxTokens: number) => promptTokenBound({ kind: "completion", prompt: "Once upon a time", params: { maxTokens } }) + maxTokens;
    const first = await complete(key, { max_tokens: 100, stop: ["."] });
    expect(first.headers.get("x-ratelimit-remaining-tokens")).toBe(String(1_000 - worst(100)));
    const used = ((await first.json()) as { usage: { total_tokens: number } }).usage.total_tokens;
    expect(used).toBeLessThan(worst(100));
    // The settle runs after the response: once it has, the worst case is replaced by the real usage.
    const ledger = await ledgerOf(p.gw, p.gw.seed.accountId);
    await expect.poll(async () => (await ledger.summary(p.gw.seed.accountId)).holds).toBe(0);
    const second = await complete(key, { max_tokens: 1 });
    expect(second.status).toBe(200);
    expect(second.headers.get("x-ratelimit-remaining-tokens")).toBe(String(1_000 - used - worst(1)));
    await second.text();
  });
});
