/** Structured logs for the agent: one JSON object per line on stdout. */
type Fields = Record<string, unknown>;

/**
 * Info lines wait up to this long and go out in one write: a write to stdout is a system call
 * (synchronous for pipes and files), and one per job cost the agent about a tenth of its CPU
 * per request under load. Warnings and errors go at once, with whatever waits before them.
 */
const BATCH_MS = 50;
const BATCH_CHARS = 64 * 1024;

let pending = "";
let timer: NodeJS.Timeout | null = null;

function flush(): void {
  if (timer) clearTimeout(timer);
  timer = null;
  if (pending === "") return;
  const text = pending;
  pending = "";
  process.stdout.write(text);
}

// Lines still waiting when the process exits (process.exit, or the event loop ran out) are written then.
process.on("exit", flush);

function emit(level: "debug" | "info" | "warn" | "error", event: string, fields: Fields): void {
  pending += JSON.stringify({ ts: new Date().toISOString(), level, event, ...fields }) + "\n";
  if (level === "warn" || level === "error" || pending.length >= BATCH_CHARS) return flush();
  if (!timer) {
    timer = setTimeout(flush, BATCH_MS);
    timer.unref();
  }
}

export const log = {
  info: (event: string, fields: Fields = {}) => emit("info", event, fields),
  warn: (event: string, fields: Fields = {}) => emit("warn", event, fields),
  error: (event: string, fields: Fields = {}) => emit("error", event, fields),
};
