import { spawn, type ChildProcess, type Serializable, type SpawnOptions } from "node:child_process";

const KEEP_BYTES = 8 * 1024;
const running = new Set<ManagedChild>();

// Whatever happens to the bench, the processes it started do not outlive it.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A process the bench started: its output is kept only as a head and a tail, never parsed per line. */
export class ManagedChild {
  readonly pid: number;
  readonly exited: Promise<number | null>;
  private head = "";
  private tail = "";
  private waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  private alive = true;

  private readonly child: ChildProcess;

  /** `ipc`: the child gets Node's IPC channel (a Node process), for `send` and `onMessage`. */
  constructor(readonly name: string, command: string, args: string[], options: SpawnOptions & { ipc?: boolean } = {}) {
    const { ipc, ...spawnOptions } = options;
    const child = spawn(command, args, { ...spawnOptions, stdio: ipc ? ["pipe", "pipe", "pipe", "ipc"] : ["pipe", "pipe", "pipe"] });
    if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`);
    this.child = child;
    this.pid = child.pid;
    this.kill = (signal) => {
      if (this.alive) child.kill(signal);
    };
    running.add(this);
    this.exited = new Promise((resolve) => {
      child.on("exit", (code) => {
        this.alive = false;
        running.delete(this);
        resolve(code);
      });
      child.on("error", () => {
        this.alive = false;
        running.delete(this);
        resolve(null);
      });
    });
    const onData = (d: Buffer): void => this.record(d.toString("utf8"));
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
  }

  /** Sends `signal` if the process is still running. */
  kill: (signal: NodeJS.Signals) => void;

  private record(text: string): void {
    if (this.head.length < KEEP_BYTES) this.head += text.slice(0, KEEP_BYTES - this.head.length);
    this.tail = (this.tail + text).slice(-KEEP_BYTES);
    for (const w of [...this.waiters]) {
      const m = w.pattern.exec(this.tail);
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }

  /** Resolves with the first match of `pattern` in the output (printed before or after this call). */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    const already = pattern.exec(this.head) ?? pattern.exec(this.tail);
    if (already) return Promise.resolve(already);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`${this.name}: no ${pattern} in its output within ${timeoutMs} ms; output: ${this.lastOutput(1500)}`));
      }, timeoutMs);
      const waiter = {
        pattern,
        resolve: (m: RegExpExecArray) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(waiter);
      void this.exited.then((code) => {
        if (!this.waiters.includes(waiter)) return;
        this.waiters = this.waiters.filter((w) => w !== waiter);
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code}) before printing ${pattern}; output: ${this.lastOutput(1500)}`));
      });
    });
  }

  lastOutput(chars: number): string {
    return this.tail.slice(-chars);
  }

  firstOutput(chars: number): string {
    return this.head.slice(0, chars);
  }

  /** Sends a message over the IPC channel; false when there is none (it closed, or the process exited). */
  send(message: Serializable): boolean {
    if (!this.child.connected) return false;
    this.child.send(message);
    return true;
  }

  onMessage(handler: (message: unknown) => void): void {
    this.child.on("message", handler);
  }

  /** Closes the IPC channel (a child may take that as its cue to finish). */
  disconnect(): void {
    if (this.child.connected) this.child.disconnect();
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.alive) return;
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}
