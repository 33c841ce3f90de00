import { describe, expect, it, vi } from "vitest";
import { SessionJobs } from "./session-jobs.ts";

const chunk = (id: string) => ({ type: "chunk" as const, id, text: "hi", tokens: 1 });
const line = (id: string) => JSON.stringify(chunk(id));

describe("SessionJobs deadlines", () => {
  it("answers a job with no first event by its deadline with upstream_timeout, and stops it on the agent", async () => {
    const stopped: string[] = [];
    const jobs = new SessionJobs((id, sessionId) => stopped.push(`${sessionId}/${id}`));
    const sent: string[] = [];
    const now = Date.now();
    const late = jobs.start({ id: "late", instanceId: "i", frame: "{}", deadline: now + 60 }, "s1", (f) => sent.push(f));
    const prompt = jobs.start({ id: "prompt", instanceId: "i", frame: "{}", deadline: now + 60 }, "s1", (f) => sent.push(f));
    jobs.deliver("s1", chunk("prompt"), line("prompt"));
    jobs.answerDueJobs();
    expect((await prompt).events).toEqual([line("prompt")]);

    const answer = await late;
    expect(Date.now() - now).toBeGreaterThanOrEqual(55);
    expect(answer.rest).toBeNull();
    expect(answer.events.map((e) => JSON.parse(e) as unknown)).toEqual([
      { type: "error", id: "late", code: "upstream_timeout", message: expect.stringContaining("produced nothing") as unknown, retryable: false },
    ]);
    expect(stopped).toEqual(["s1/late"]);
    expect(sent).toHaveLength(2);
  });

  it("re-arms for the next deadline, and a job that answered in time is never timed out", async () => {
    const stopped: string[] = [];
    const jobs = new SessionJobs((id) => stopped.push(id));
    const now = Date.now();
    const first = jobs.start({ id: "a", instanceId: "i", frame: "{}", deadline: now + 30 }, "s", () => undefined);
    const second = jobs.start({ id: "b", instanceId: "i", frame: "{}", deadline: now + 90 }, "s", () => undefined);
    await first;
    expect(stopped).toEqual(["a"]);
    const answer = await second;
    expect(Date.now() - now).toBeGreaterThanOrEqual(85);
    expect(JSON.parse(answer.events[0]!)).toMatchObject({ code: "upstream_timeout" });
    expect(stopped).toEqual(["a", "b"]);
  });

  it("a job without a deadline waits as long as it takes", async () => {
    const jobs = new SessionJobs(() => undefined);
    const job = jobs.start({ id: "x", instanceId: "i", frame: "{}" }, "s", () => undefined);
    const state = await Promise.race([job.then(() => "answered"), new Promise((r) => setTimeout(() => r("waiting"), 50))]);
    expect(state).toBe("waiting");
    jobs.deliver("s", chunk("x"), line("x"));
    jobs.answerDueJobs();
    expect((await job).events).toEqual([line("x")]);
  });
});

describe("SessionJobs deadline timer", () => {
  it("is armed once while jobs are live (not per job), fires harmlessly, and is cleared with the last live job", () => {
    vi.useFakeTimers();
    try {
      const stopped: string[] = [];
      const jobs = new SessionJobs((id) => stopped.push(id));
      const start = (id: string) => void jobs.start({ id, instanceId: "i", frame: "{}", deadline: Date.now() + 1_000 }, "s", () => undefined);
      start("a");
      expect(vi.getTimerCount()).toBe(1);
      jobs.deliver("s", chunk("a"), line("a"));
      jobs.answerDueJobs();
      // "a" no longer waits but is live: the timer stays (no clear and re-arm per job).
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(500);
      start("b"); // its deadline is later than the armed one: nothing to arm
      expect(vi.getTimerCount()).toBe(1);
      // At the first deadline nothing is overdue; the timer is re-armed for "b" only.
      vi.advanceTimersByTime(500);
      expect(stopped).toEqual([]);
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(500);
      expect(stopped).toEqual(["b"]);
      // "b" ended (timed out), "a" is still live: nothing waits, so no timer until a job does.
      expect(vi.getTimerCount()).toBe(0);
      start("c");
      expect(vi.getTimerCount()).toBe(1);
      jobs.deliver("s", chunk("c"), line("c"));
      jobs.answerDueJobs();
      expect(jobs.end("a")).toBe("s");
      expect(vi.getTimerCount()).toBe(1);
      expect(jobs.end("c")).toBe("s");
      // No live job: the timer goes, so the session can hibernate.
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("SessionJobs holds", () => {
  it("answers each held job at the end of its own hold (with what came meanwhile), or whole at its end, on the one session timer", async () => {
    vi.useFakeTimers();
    try {
      const jobs = new SessionJobs(() => undefined);
      const start = (id: string) => jobs.start({ id, instanceId: "i", frame: "{}", holdMs: 1_000 }, "s", () => undefined);
      const answers = new Map<string, { events: string[]; whole: boolean; at: number }>();
      const t0 = Date.now();
      for (const id of ["a", "b", "c"]) void start(id).then((a) => answers.set(id, { events: a.events, whole: a.rest === null, at: Date.now() - t0 }));
      jobs.deliver("s", chunk("a"), line("a"));
      jobs.answerDueJobs();
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(100);
      jobs.deliver("s", chunk("b"), line("b"));
      jobs.deliver("s", chunk("c"), line("c"));
      jobs.answerDueJobs();
      // Their holds end later than a's: no timer of their own.
      expect(vi.getTimerCount()).toBe(1);
      jobs.deliver("s", chunk("a"), line("a"));
      jobs.deliver("s", { type: "done", id: "c", finishReason: "stop", usage: { promptTokens: 1, completionTokens: 2 }, timings: { ttftMs: 1, durationMs: 2 } }, "c-done");
      jobs.answerDueJobs();
      await vi.advanceTimersByTimeAsync(0);
      expect(answers.get("c")).toEqual({ events: [line("c"), "c-done"], whole: true, at: 100 });
      await vi.advanceTimersByTimeAsync(899);
      expect(answers.has("a")).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(answers.get("a")).toEqual({ events: [line("a"), line("a")], whole: false, at: 1_000 });
      expect(answers.has("b")).toBe(false);
      await vi.advanceTimersByTimeAsync(100);
      expect(answers.get("b")).toEqual({ events: [line("b")], whole: false, at: 1_100 });
      expect(jobs.end("a")).toBe("s");
      expect(jobs.end("b")).toBe("s");
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
