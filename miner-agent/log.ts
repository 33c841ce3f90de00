/** Structured logs for the agent: one JSON object per line on stdout. */
type Fields = Record<string, unknown>;

function emit(level: "debug" | "info" | "warn" | "error", event: string, fields: Fields): void {
  process.stdout.write(JSON.stringify({ ts: new Date().toISOString(), level, event, ...fields }) + "\n");
}

export const log = {
  info: (event: string, fields: Fields = {}) => emit("info", event, fields),
  warn: (event: string, fields: Fields = {}) => emit("warn", event, fields),
  error: (event: string, fields: Fields = {}) => emit("error", event, fields),
};
