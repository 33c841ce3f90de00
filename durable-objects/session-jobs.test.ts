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
    jobs.messageRead();
    expect((await prompt).events).toEqual([line("prompt")]);

    const answer = await late;
    expect(Date.now() - now).toBeGreaterThanOrEqual(55);
    expect(answer.more).toBe(false);
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
    jobs.messageRead();
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
      jobs.messageRead();
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
      jobs.messageRead();
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
      for (const id of ["a", "b", "c"]) void start(id).then((a) => answers.set(id, { events: a.events, whole: !a.more, at: Date.now() - t0 }));
      jobs.deliver("s", chunk("a"), line("a"));
      jobs.messageRead();
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(100);
      jobs.deliver("s", chunk("b"), line("b"));
      jobs.deliver("s", chunk("c"), line("c"));
      jobs.messageRead();
      // Their holds end later than a's: no timer of their own.
      expect(vi.getTimerCount()).toBe(1);
      jobs.deliver("s", chunk("a"), line("a"));
      jobs.deliver("s", { type: "done", id: "c", finishReason: "stop", usage: { promptTokens: 1, completionTokens: 2 }, timings: { ttftMs: 1, durationMs: 2 } }, "c-done");
      jobs.messageRead();
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

describe("SessionJobs sinks", () => {
  const done = (id: string) => JSON.stringify({ type: "done", id, finishReason: "stop", usage: { promptTokens: 1, completionTokens: 3 }, timings: { ttftMs: 1, durationMs: 2 } });
  const doneFrame = (id: string) => JSON.parse(done(id)) as Parameters<SessionJobs["deliver"]>[1];
  /** A sink as the session holds an RPC stub of one: its pushes, and whether it was let go. */
  const sink = (fail = false) => {
    const pushes: { events: string[]; ended: boolean }[] = [];
    const s = Object.assign(
      (events: string[], ended: boolean) => {
        pushes.push({ events: [...events], ended });
        return fail ? Promise.reject(new Error("reader gone")) : Promise.resolve();
      },
      {
        pushes,
        disposed: false,
        [Symbol.dispose]() {
          s.disposed = true;
        },
      },
    );
    return s;
  };

  it("pushes the events of one agent message in one call per job after the answer, the last ones with ended, then lets the sink go", async () => {
    const jobs = new SessionJobs(() => undefined);
    const a = sink();
    const b = sink();
    const answerA = jobs.start({ id: "a", instanceId: "i", frame: "{}" }, "s", () => undefined, a);
    const answerB = jobs.start({ id: "b", instanceId: "i", frame: "{}" }, "s", () => undefined, b);
    jobs.deliver("s", chunk("a"), line("a"));
    jobs.deliver("s", chunk("b"), line("b"));
    jobs.messageRead();
    expect(await answerA).toMatchObject({ events: [line("a")], more: true });
    expect(await answerB).toMatchObject({ events: [line("b")], more: true });
    expect(a.pushes).toEqual([]);
    // One message: two chunks of a, one of b.
    jobs.deliver("s", chunk("a"), "a2");
    jobs.deliver("s", chunk("b"), "b2");
    jobs.deliver("s", chunk("a"), "a3");
    expect(a.pushes).toEqual([]); // nothing goes before the message is read
    jobs.messageRead();
    expect(a.pushes).toEqual([{ events: ["a2", "a3"], ended: false }]);
    expect(b.pushes).toEqual([{ events: ["b2"], ended: false }]);
    // The job's end goes at once, with what waited before it.
    jobs.deliver("s", chunk("a"), "a4");
    jobs.deliver("s", doneFrame("a"), done("a"));
    expect(a.pushes.at(-1)).toEqual({ events: ["a4", done("a")], ended: true });
    expect(a.disposed).toBe(true);
    jobs.messageRead();
    expect(a.pushes).toHaveLength(2);
    // A job that ends whole in its answer never calls its sink.
    const c = sink();
    const answerC = jobs.start({ id: "c", instanceId: "i", frame: "{}" }, "s", () => undefined, c);
    jobs.deliver("s", chunk("c"), line("c"));
    jobs.deliver("s", doneFrame("c"), done("c"));
    jobs.messageRead();
    expect(await answerC).toMatchObject({ events: [line("c"), done("c")], more: false });
    expect(c.pushes).toEqual([]);
    expect(c.disposed).toBe(true);
    // The agent's session ends: the live job's sink gets the retry-less error, and is let go.
    jobs.failSession("s");
    expect(b.pushes.at(-1)).toMatchObject({ ended: true });
    expect(JSON.parse(b.pushes.at(-1)!.events[0]!)).toMatchObject({ id: "b", code: "miner_disconnected", retryable: false });
    expect(b.disposed).toBe(true);
  });

  it("stops the job on the agent when a push is refused (the Worker's reader is gone), and lets a cancelled job's sink go without a push", async () => {
    const stopped: string[] = [];
    const jobs = new SessionJobs((id) => stopped.push(id));
    const gone = sink(true);
    void jobs.start({ id: "g", instanceId: "i", frame: "{}" }, "s", () => undefined, gone);
    jobs.deliver("s", chunk("g"), line("g"));
    jobs.messageRead();
    jobs.deliver("s", chunk("g"), "g2");
    jobs.messageRead();
    await new Promise((r) => setTimeout(r, 0));
    expect(stopped).toEqual(["g"]);
    expect(gone.disposed).toBe(true);
    expect(jobs.end("g")).toBeNull(); // no longer live

    const left = sink();
    void jobs.start({ id: "l", instanceId: "i", frame: "{}" }, "s", () => undefined, left);
    jobs.deliver("s", chunk("l"), line("l"));
    jobs.messageRead();
    jobs.deliver("s", chunk("l"), "l2");
    jobs.cancel("l");
    jobs.messageRead();
    expect(left.pushes).toEqual([]);
    expect(left.disposed).toBe(true);
    expect(stopped).toEqual(["g", "l"]);
  });

  it("keeps the events of a job answered without a sink for the Worker's follow: what came meanwhile at once, the rest as it comes", async () => {
    vi.useFakeTimers();
    try {
      const jobs = new SessionJobs(() => undefined);
      const start = (id: string) => jobs.start({ id, instanceId: "i", frame: "{}", holdMs: 1_000 }, "s", () => undefined);
      const answers = new Map<string, Awaited<ReturnType<typeof start>>>();
      for (const id of ["long", "over", "lost"]) void start(id).then((a) => answers.set(id, a));
      for (const id of ["long", "over", "lost"]) jobs.deliver("s", chunk(id), line(id));
      jobs.messageRead();
      await vi.advanceTimersByTimeAsync(1_000);
      // Each outlasted its hold: answered with more to come, and no sink yet.
      expect(answers.get("long")).toEqual({ events: [line("long")], more: true, heldMs: 1_000 });
      jobs.deliver("s", chunk("long"), "long2");
      jobs.deliver("s", chunk("over"), "over2");
      jobs.deliver("s", doneFrame("over"), done("over"));
      jobs.deliver("s", chunk("lost"), "lost2");
      jobs.deliver("s", doneFrame("lost"), done("lost"));
      jobs.messageRead();
      const long = sink();
      jobs.follow("long", long);
      expect(long.pushes).toEqual([{ events: ["long2"], ended: false }]);
      jobs.deliver("s", doneFrame("long"), done("long"));
      expect(long.pushes.at(-1)).toEqual({ events: [done("long")], ended: true });
      expect(long.disposed).toBe(true);
      // A job that ended before its follow came: its last events, with ended.
      const over = sink();
      jobs.follow("over", over);
      expect(over.pushes).toEqual([{ events: ["over2", done("over")], ended: true }]);
      expect(over.disposed).toBe(true);
      // An end whose follow never comes is dropped after a while (and the timer goes with it).
      expect(vi.getTimerCount()).toBe(1);
      await vi.advanceTimersByTimeAsync(30_000);
      expect(vi.getTimerCount()).toBe(0);
      const late = sink();
      jobs.follow("lost", late);
      expect(late.pushes).toEqual([{ events: [], ended: true }]);
      expect(late.disposed).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});
