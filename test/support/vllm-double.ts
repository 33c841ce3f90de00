/**
 * Test double for `vllm serve` (vLLM cannot run here: no GPU, no model hub): a process that
 * serves the upstream double (test/support/upstream-double.ts: deterministic "tok0 tok1 ..."
 * streams, OpenAI routes under /v1) on the port it is told, answers GET /health with 200 once
 * it listens, logs a few vLLM-like lines, and exits 0 on SIGTERM or SIGINT.
 *
 * The command template that launches it (for a `command` engine or a deploy engine's `command`),
 * with this checkout's absolute paths; `vllmDoubleCommand()` builds exactly this string:
 *
 *   <node> --import <ROOT>/node_modules/tsx/dist/loader.mjs <ROOT>/test/support/vllm-double.ts --port {port} --model {model}
 *
 * (`<node>` is process.execPath; `--import tsx` would resolve tsx from the working directory, so
 * the loader is named by its absolute path and the template works from any cwd.)
 *
 * Options, all optional except --port:
 *   --port N                 listen on 127.0.0.1:N
 *   --model NAME             the served model id (default "double-model")
 *   --max-model-len N        accepted like vLLM's flag, e.g. `--max-model-len {context}` (logged)
 *   --startup-delay-ms N     wait before listening (a model load: connections are refused meanwhile)
 *   --tokens N               tokens per completion (default: max_tokens, else 16)
 *   --delay-per-token-ms N   wait between tokens
 * An unknown option or a missing --port prints an error on stderr and exits 2, as vLLM's argparse does.
 */
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { startUpstreamDouble } from "./upstream-double.ts";

const SCRIPT = fileURLToPath(import.meta.url);

/** The tsx loader, by absolute path (resolved from this checkout's node_modules). */
export const TSX_LOADER = createRequire(import.meta.url).resolve("tsx");

/**
 * The command template launching this double, with `{port}` and `{model}` placeholders (and any
 * extra arguments appended, e.g. `--startup-delay-ms 500`).
 */
export function vllmDoubleCommand(extra: string[] = []): string {
  return [process.execPath, "--import", TSX_LOADER, SCRIPT, "--port", "{port}", "--model", "{model}", ...extra].join(" ");
}

function intOption(values: Record<string, string | boolean | undefined>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (typeof raw !== "string" || !Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got '${String(raw)}'`);
  return n;
}

async function serve(argv: string[]): Promise<void> {
  let values: Record<string, string | boolean | undefined>;
  let port: number | undefined;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        port: { type: "string" },
        model: { type: "string" },
        "max-model-len": { type: "string" },
        "startup-delay-ms": { type: "string" },
        tokens: { type: "string" },
        "delay-per-token-ms": { type: "string" },
      },
    }));
    port = intOption(values, "port");
    if (port === undefined || port < 1 || port > 65535) throw new Error("--port is required (1-65535)");
  } catch (err) {
    process.stderr.write(`vllm-double: error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const model = typeof values.model === "string" ? values.model : "double-model";
  const tokens = intOption(values, "tokens");
  const delayPerTokenMs = intOption(values, "delay-per-token-ms");
  let stopping = false;
  let close = async (): Promise<void> => undefined;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`INFO vllm-double: ${signal}, shutting down\n`);
    void close().finally(() => process.exit(0));
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));

  process.stdout.write(`INFO vllm-double: loading ${model} (max_model_len=${String(values["max-model-len"] ?? "default")})\n`);
  process.stderr.write(`WARNING vllm-double: this is a test double, not vLLM\n`);
  await sleep(intOption(values, "startup-delay-ms") ?? 0);
  if (stopping) return;
  const upstream = await startUpstreamDouble({
    model,
    port,
    ...(tokens !== undefined ? { tokens } : {}),
    ...(delayPerTokenMs !== undefined ? { delayPerTokenMs } : {}),
  });
  // The double remembers every request for assertions in-process; nobody reads them here.
  setInterval(() => upstream.reset(), 5_000).unref();
  close = () => upstream.close();
  process.stdout.write(`INFO vllm-double: started server process [${process.pid}], serving on http://127.0.0.1:${port}\n`);
}

if (process.argv[1] && resolve(process.argv[1]) === SCRIPT) {
  serve(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`vllm-double: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(1);
  });
}
