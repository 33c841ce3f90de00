import { log } from "../../miner-agent/log.ts";
import type { FleetReport, Problem } from "./contract.ts";

type Fields = Record<string, unknown>;

const MAX_PROBLEM_KINDS = 12;
/** Distinct kinds kept while counting; beyond them, new kinds are counted by event name only. */
const MAX_KEYS = 200;

/** The part of an event's fields that says what went wrong, short enough to group by. */
function detailOf(event: string, f: Fields): string {
  const parts = [f.code, f.reason, f.error, f.outcome].filter((v) => v !== undefined && v !== "").map(String);
  return parts.join(" ").slice(0, 200) || event;
}

/**
 * The agents' own structured events, counted instead of printed: the agent modules log one
 * JSON line per event to stdout, which from a thousand agents in one process is noise, and
 * which are exactly what the fleet reports (jobs ended, connections closed, frames refused).
 * Warnings and errors logged before the stop are the fleet's problems; none are expected.
 */
export class Telemetry {
  welcomes = 0;
  jobs = { ok: 0, cancelled: 0, error: 0 };
  tokens = 0;
  private stopping = false;
  private readonly problems = new Map<string, Problem>();

  /** Takes the agent log of this process over (miner-agent/log.ts). */
  install(): void {
    log.info = (event, fields = {}) => this.info(event, fields);
    log.warn = (event, fields = {}) => this.problem("warn", event, fields);
    log.error = (event, fields = {}) => this.problem("error", event, fields);
  }

  /** From now on, sockets closing and jobs aborting are the fleet's own doing, not problems. */
  markStopping(): void {
    this.stopping = true;
  }

  problemList(): Problem[] {
    return [...this.problems.values()].sort((a, b) => b.count - a.count).slice(0, MAX_PROBLEM_KINDS);
  }

  report(base: Omit<FleetReport, "welcomes" | "jobs" | "tokens" | "problems">): FleetReport {
    return { ...base, welcomes: this.welcomes, jobs: { ...this.jobs }, tokens: this.tokens, problems: this.problemList() };
  }

  private info(event: string, f: Fields): void {
    if (event === "gateway.connected") this.welcomes++;
    if (event !== "job.end" || this.stopping) return;
    const outcome = f.outcome === "ok" || f.outcome === "cancelled" ? f.outcome : "error";
    this.jobs[outcome]++;
    if (outcome === "ok" && typeof f.completionTokens === "number") this.tokens += f.completionTokens;
  }

  private problem(level: "warn" | "error", event: string, f: Fields): void {
    if (this.stopping) return;
    const detail = this.problems.size < MAX_KEYS ? detailOf(event, f) : "(various)";
    const key = `${level} ${event} ${detail}`;
    const known = this.problems.get(key);
    if (known) known.count++;
    else this.problems.set(key, { level, event, detail, count: 1 });
  }
}
