import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { log } from "../log.ts";

/**
 * A server process the agent launches (vLLM, SGLang, llama-server, ...): detached in its own
 * process group (so a terminal's Ctrl-C reaches the agent only, and stopping it reaches the
 * server's own workers too), its output logged line by line, stopped with SIGTERM then SIGKILL.
 */

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchedProcess {
  readonly pid: number;
  /** Set once the process has exited. */
  readonly exit: ProcessExit | null;
  /** Resolves when the process has exited and its output is read (or shortly after the exit). */
  readonly exited: Promise<ProcessExit>;
  /** The exit, if the process exits within `ms`; else null. */
  exitWithin(ms: number): Promise<ProcessExit | null>;
  /** The last lines of stderr (of stdout when stderr was silent), oldest first. */
  tail(): string[];
  /**
   * SIGTERM the process group; SIGKILL it when the leader has not exited after `graceMs` (or when
   * other members still run then). Resolves when the leader has exited.
   */
  stop(graceMs: number): Promise<ProcessExit>;
}

/** Longest line logged; the rest of a longer line is dropped (a progress bar, a dumped tensor). */
export const MAX_LINE_CHARS = 2_000;
const TAIL_LINES = 12;
/** After the exit, how long to wait for the pipes to deliver the last output. */
const OUTPUT_GRACE_MS = 500;
const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

/** Splits text arriving in pieces into lines (\n, \r\n or a lone \r), each at most `max` chars. */
export class LineSplitter {
  private buffer = "";
  private dropping = false;

  constructor(
    private readonly onLine: (line: string, truncated: boolean) => void,
    private readonly max = MAX_LINE_CHARS,
  ) {}

  push(text: string): void {
    let start = 0;
    for (const m of text.matchAll(/\r\n|\r|\n/g)) {
      this.piece(text.slice(start, m.index), true);
      start = m.index + m[0].length;
    }
    this.piece(text.slice(start), false);
  }

  end(): void {
    this.piece("", true);
  }

  private piece(text: string, ended: boolean): void {
    if (!this.dropping) {
      this.buffer += text;
      if (this.buffer.length > this.max) {
        this.emit(this.buffer.slice(0, this.max), true);
        this.buffer = "";
        this.dropping = true;
      }
    }
    if (ended) {
      if (!this.dropping) this.emit(this.buffer, false);
      this.buffer = "";
      this.dropping = false;
    }
  }

  private emit(raw: string, truncated: boolean): void {
    const line = raw.replace(ANSI, "").trimEnd();
    if (line !== "") this.onLine(line, truncated);
  }
}

/** Process groups still running, stopped when the agent exits without closing them. */
const running = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is gone.
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function describeExit(exit: ProcessExit): string {
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code ?? "unknown"}`;
}

/**
 * Start `argv` (no shell). Resolves once the process has started; rejects when it cannot start
 * (e.g. the binary is not installed). Every output line is logged as `engine.output` with `fields`.
 */
export function launchProcess(argv: string[], env: NodeJS.ProcessEnv, fields: Record<string, unknown>): Promise<LaunchedProcess> {
  const [file, ...args] = argv;
  if (!file) return Promise.reject(new Error("the command is empty"));
  const child = spawn(file, args, { detached: true, stdio: ["ignore", "pipe", "pipe"], env });
  return new Promise((resolve, reject) => {
    child.once("error", (err) => reject(new Error(`could not start '${file}': ${err.message}`)));
    child.once("spawn", () => {
      const pid = child.pid!;
      running.add(pid);
      if (!exitHookInstalled) {
        exitHookInstalled = true;
        process.on("exit", () => running.forEach((p) => killGroup(p, "SIGTERM")));
      }
      const tails = { stdout: [] as string[], stderr: [] as string[] };
      for (const stream of ["stdout", "stderr"] as const) {
        const lines = new LineSplitter((line, truncated) => {
          const tail = tails[stream];
          tail.push(line);
          if (tail.length > TAIL_LINES) tail.shift();
          log.info("engine.output", { ...fields, pid, stream, line, ...(truncated ? { truncated } : {}) });
        });
        child[stream].setEncoding("utf8");
        child[stream].on("data", (text: string) => lines.push(text));
        child[stream].on("end", () => lines.end());
      }
      let exit: ProcessExit | null = null;
      const exitEvent = new Promise<ProcessExit>((done) =>
        child.once("exit", (code, signal) => {
          exit = { code, signal };
          running.delete(pid);
          done(exit);
        }),
      );
      const closed = new Promise<void>((done) => child.once("close", () => done()));
      const exited = exitEvent.then(async (e) => {
        await Promise.race([closed, sleep(OUTPUT_GRACE_MS)]);
        return e;
      });
      const exitWithin = (ms: number): Promise<ProcessExit | null> =>
        exit ? Promise.resolve(exit) : Promise.race([exitEvent, sleep(ms).then(() => null)]);
      resolve({
        pid,
        get exit() {
          return exit;
        },
        exited,
        exitWithin,
        tail: () => [...(tails.stderr.length ? tails.stderr : tails.stdout)],
        async stop(graceMs) {
          const deadline = Date.now() + graceMs;
          if (!exit) killGroup(pid, "SIGTERM");
          if (!(await exitWithin(graceMs))) killGroup(pid, "SIGKILL");
          const result = await exited;
          // The leader is gone; give its workers the rest of the grace period, then kill them.
          while (groupAlive(pid) && Date.now() < deadline) await sleep(50);
          if (groupAlive(pid)) killGroup(pid, "SIGKILL");
          return result;
        },
      });
    });
  });
}
