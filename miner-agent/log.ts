/** Structured logs for the agent: one JSON object per line on stdout. */
type Fields = Record<string, unknown>;

/**
 * Info lines written in one turn of the event loop go out together, at its end (setImmediate), in
 * one write: a write to stdout is a system call (synchronous for pipes and files), and a write
 * per line cost the agent about 7% more CPU per small request under load (`npm run bench:ab`).
 * Warnings and errors go at once, with whatever waits before them; lines still waiting at exit
 * go then.
 */
const BATCH_CHARS = 64 * 1024;

let pending = "";
let scheduled: NodeJS.Immediate | null = null;

function flush(): void {
  if (scheduled) clearImmediate(scheduled);
  scheduled = null;
  if (pending === "") return;
  const text = pending;
  pending = "";
  process.stdout.write(text);
}

process.on("exit", flush);

function emit(level: "debug" | "info" | "warn" | "error", event: string, fields: Fields): void {
  pending += JSON.stringify({ ts: new Date().toISOString(), level, event, ...fields }) + "\n";
  if (level === "warn" || level === "error" || pending.length >= BATCH_CHARS) return flush();
  scheduled ??= setImmediate(flush);
}

export const log = {
  info: (event: string, fields: Fields = {}) => emit("info", event, fields),
  warn: (event: string, fields: Fields = {}) => emit("warn", event, fields),
  error: (event: string, fields: Fields = {}) => emit("error", event, fields),
};
