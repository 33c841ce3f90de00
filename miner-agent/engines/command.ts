import { once } from "node:events";
import { createServer, type AddressInfo } from "node:net";
import { log } from "../log.ts";
import { describeExit, launchProcess, type LaunchedProcess, type ProcessExit } from "./launched-process.ts";
import { createOpenAIUpstreamEngine } from "./openai-upstream.ts";
import { EngineError, type CommandEngineConfig, type Engine } from "./types.ts";

/**
 * The `command` engine: launches an OpenAI-compatible server from a command template (e.g.
 * `vllm serve {model} --port {port}`), waits until its health route answers 2xx, then serves
 * through the openai-upstream engine at http://127.0.0.1:{port}/v1.
 */

export interface CommandEngine extends Engine {
  readonly kind: "command";
  readonly pid: number;
  readonly port: number;
  /** Resolves when the server process has exited (closed, or died on its own). */
  readonly exited: Promise<ProcessExit>;
}

export interface CommandEngineOptions {
  /** close(): how long the server has after SIGTERM before SIGKILL. */
  stopGraceMs?: number;
  /** How often the health route is polled during startup. */
  healthIntervalMs?: number;
}

export const STOP_GRACE_MS = 10_000;
const HEALTH_INTERVAL_MS = 250;
/** One health request may take at most this long (a server busy loading may accept and stall). */
const HEALTH_REQUEST_TIMEOUT_MS = 5_000;
/** A failed request waits this long for the process's exit, to say that it died. */
const EXIT_CHECK_MS = 200;

export interface TemplateValues {
  model: string;
  port: number;
  /** Context length, for {context}. */
  context?: number;
  /** GPU indices, for {gpus} (comma-separated). */
  gpus?: number[];
}

/**
 * The argv of a command template: split on whitespace (no shell, no quoting), each placeholder
 * replaced inside its argument. An unknown placeholder, or {context} without a context length,
 * is an error rather than a server started with the wrong arguments.
 */
export function commandArgv(template: string, values: TemplateValues): string[] {
  const argv = template.trim().split(/\s+/).filter(Boolean);
  if (argv.length === 0) throw new Error("the command is empty");
  return argv.map((arg) =>
    arg.replace(/\{(\w+)\}/g, (_m, name: string) => {
      switch (name) {
        case "model":
          return values.model;
        case "port":
          return String(values.port);
        case "gpus":
          return (values.gpus ?? []).join(",");
        case "context":
          if (values.context === undefined) throw new Error("the command uses {context}, but no context length is known for this instance");
          return String(values.context);
        default:
          throw new Error(`unknown placeholder {${name}} in the command (known: {model} {port} {context} {gpus})`);
      }
    }),
  );
}

/** The argv as logged: values of flags that look like secrets are replaced. */
export function redactArgv(argv: string[]): string[] {
  const secret = /key|token|secret|password/i;
  return argv.map((arg, i) => {
    const eq = /^(--?[^=]+)=/.exec(arg);
    if (eq && secret.test(eq[1]!)) return `${eq[1]}=[redacted]`;
    const prev = argv[i - 1];
    return prev !== undefined && /^--?[^=]+$/.test(prev) && secret.test(prev) && !arg.startsWith("-") ? "[redacted]" : arg;
  });
}

/**
 * Bind `port` (0: any) on 127.0.0.1, read it, close: a port that was free a moment ago. A fixed
 * port already taken is an error: its health route would be some other server's.
 */
export async function freePort(port = 0): Promise<number> {
  const server = createServer();
  server.listen(port, "127.0.0.1");
  try {
    await once(server, "listening");
  } catch (err) {
    throw new Error(`port ${port} on 127.0.0.1 is not free: ${describe(err)}`);
  }
  const bound = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return bound;
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause ? `${err.message}: ${cause}` : err.message;
}

function withOutput(message: string, proc: LaunchedProcess): string {
  const tail = proc.tail();
  return tail.length ? `${message}; last output:\n${tail.map((l) => `  ${l.slice(0, 300)}`).join("\n")}` : message;
}

/** Polls GET `url` until it answers 2xx; throws when the process exits first or time runs out. */
async function waitHealthy(url: string, proc: LaunchedProcess, timeoutMs: number, intervalMs: number, argv0: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  for (;;) {
    if (proc.exit) throw new Error(withOutput(`'${argv0}' exited (${describeExit(proc.exit)}) before GET ${url} answered`, proc));
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error(withOutput(`'${argv0}' was not healthy within ${timeoutMs} ms (GET ${url}: ${last})`, proc));
    const requestTimeoutMs = Math.min(HEALTH_REQUEST_TIMEOUT_MS, remaining);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(requestTimeoutMs) });
      await res.body?.cancel().catch(() => undefined);
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      const timedOut = err instanceof Error && err.name === "TimeoutError";
      // A request cut short by the deadline says less than the answer before it.
      if (!timedOut) last = describe(err);
      else if (requestTimeoutMs === HEALTH_REQUEST_TIMEOUT_MS || last === "no answer yet") last = `no answer within ${requestTimeoutMs} ms`;
    }
    // Wake up at once when the process exits, so a crash is reported without waiting.
    await proc.exitWithin(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}

export async function createCommandEngine(config: CommandEngineConfig, options: CommandEngineOptions = {}): Promise<CommandEngine> {
  const port = await freePort(config.port ?? 0);
  const argv = commandArgv(config.command, {
    model: config.model,
    port,
    ...(config.contextLength !== undefined ? { context: config.contextLength } : {}),
    ...(config.gpus ? { gpus: config.gpus } : {}),
  });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...(config.gpus ? { CUDA_VISIBLE_DEVICES: config.gpus.join(",") } : {}),
    ...config.env,
  };
  const fields = { engine: "command", model: config.model, port };
  const t0 = Date.now();
  log.info("engine.launching", { ...fields, argv: redactArgv(argv), gpus: config.gpus, env: Object.keys(config.env) });
  const proc = await launchProcess(argv, env, fields);
  const graceMs = options.stopGraceMs ?? STOP_GRACE_MS;
  const healthURL = `http://127.0.0.1:${port}${config.healthPath}`;
  try {
    await waitHealthy(healthURL, proc, config.startupTimeoutMs, options.healthIntervalMs ?? HEALTH_INTERVAL_MS, argv[0]!);
  } catch (err) {
    await proc.stop(graceMs);
    log.error("engine.launch_failed", { ...fields, pid: proc.pid, error: describe(err) });
    throw err;
  }
  log.info("engine.healthy", { ...fields, pid: proc.pid, startupMs: Date.now() - t0 });

  const upstream = createOpenAIUpstreamEngine({
    kind: "openai-upstream",
    baseURL: `http://127.0.0.1:${port}/v1`,
    model: config.model,
    parallel: config.parallel,
  });
  let closing: Promise<void> | null = null;
  void proc.exited.then((exit) => {
    if (!closing) log.error("engine.exited", { ...fields, pid: proc.pid, ...exit, output: proc.tail() });
  });

  const dead = (exit: ProcessExit): string => `the engine process exited (${describeExit(exit)})`;
  /** A failed request: when the process died, say so (retryable as long as nothing was sent). */
  const explain = async (err: unknown, signal: AbortSignal): Promise<unknown> => {
    if (!(err instanceof EngineError) || signal.aborted || closing) return err;
    const exit = await proc.exitWithin(EXIT_CHECK_MS);
    return exit ? new EngineError(`${dead(exit)}: ${err.message}`, err.retryable, err.code) : err;
  };

  return {
    kind: "command",
    capacity: config.parallel,
    pid: proc.pid,
    port,
    exited: proc.exited,
    async generate(spec, hooks) {
      if (proc.exit) throw new EngineError(dead(proc.exit), true);
      try {
        return await upstream.generate(spec, hooks);
      } catch (err) {
        throw await explain(err, hooks.signal);
      }
    },
    async embed(input, signal) {
      if (proc.exit) throw new EngineError(dead(proc.exit), true);
      try {
        return await upstream.embed!(input, signal);
      } catch (err) {
        throw await explain(err, signal);
      }
    },
    close() {
      closing ??= (async () => {
        await upstream.close();
        const exit = await proc.stop(graceMs);
        log.info("engine.stopped", { ...fields, pid: proc.pid, ...exit });
      })();
      return closing;
    },
  };
}
