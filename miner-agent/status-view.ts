import { loadConfig } from "./config.ts";
import { fetchEarnings, type Earnings } from "./earnings.ts";
import { loadHotkey } from "./hotkey.ts";
import { readStatusFile, type AgentStatus } from "./status.ts";

/**
 * `sluice-miner status`: what the running agent last wrote to its status file, whether it is
 * still running, and what the gateway says the miner earned.
 */

/** The agent writes its status every 2 s; older than this and it is not running (or hung). */
export const STALE_AFTER_MS = 10_000;

export type AgentState = "running" | "stopped" | "never-ran" | "unreadable";

export interface StatusReport {
  config: string;
  statusFile: string;
  state: AgentState;
  /** Why the agent counts as not running, or why the status file cannot be read. */
  reason?: string;
  /** The agent's last written status (the last known state when it is not running). */
  status: AgentStatus | null;
  earnings: Earnings;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Running = its process exists and it wrote its status recently. */
export function liveness(status: AgentStatus, now: Date, alive: (pid: number) => boolean = pidAlive): { running: boolean; reason?: string } {
  const age = now.getTime() - Date.parse(status.updatedAt);
  if (!alive(status.pid)) return { running: false, reason: `process ${status.pid} is gone` };
  if (age > STALE_AFTER_MS) return { running: false, reason: `process ${status.pid} exists but has not updated its status for ${duration(age)}` };
  return { running: true };
}

export async function collectStatus(
  configPath: string,
  opts: { now?: Date; fetch?: typeof fetch; alive?: (pid: number) => boolean } = {},
): Promise<StatusReport> {
  const config = await loadConfig(configPath);
  const now = opts.now ?? new Date();
  const earnings: Promise<Earnings> = loadHotkey(config.hotkeyFile).then(
    (key) => fetchEarnings(config.gateway, key, { now, ...(opts.fetch ? { fetch: opts.fetch } : {}) }),
    (err: unknown) => ({ available: false, reason: err instanceof Error ? err.message : String(err) }),
  );
  const base = { config: configPath, statusFile: config.statusFile };
  let status: AgentStatus | null;
  try {
    status = await readStatusFile(config.statusFile);
  } catch (err) {
    return { ...base, state: "unreadable", reason: err instanceof Error ? err.message : String(err), status: null, earnings: await earnings };
  }
  if (!status) return { ...base, state: "never-ran", reason: "no status file: the agent has not run with this config", status, earnings: await earnings };
  const live = liveness(status, now, opts.alive);
  return { ...base, state: live.running ? "running" : "stopped", ...(live.reason ? { reason: live.reason } : {}), status, earnings: await earnings };
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

const int = (n: number): string => n.toLocaleString("en-US");

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  return [line(header), ...rows.map(line)];
}

function earningsLine(e: Earnings): string {
  return e.available ? `$${e.totalUsd} total, $${e.todayUsd} today (${e.day} UTC)` : `unavailable: ${e.reason}`;
}

export function renderStatus(report: StatusReport, now = new Date()): string {
  const out: string[] = [];
  const row = (label: string, value: string) => out.push(`${label.padEnd(10)} ${value}`);
  const s = report.status;
  switch (report.state) {
    case "running":
      row("Agent", `running (pid ${s!.pid}, up ${duration(now.getTime() - Date.parse(s!.startedAt))}${s!.draining ? ", draining" : ""})`);
      break;
    case "stopped":
      row("Agent", `not running: ${report.reason}; last update ${s!.updatedAt} (${duration(now.getTime() - Date.parse(s!.updatedAt))} ago). Last known state:`);
      break;
    default:
      row("Agent", `not running: ${report.reason}`);
  }
  row("Config", report.config);
  if (s) {
    row("Gateway", `${s.gateway} (${s.connected ? "connected" : "not connected"})`);
    row("Hotkey", s.hotkey || "(not loaded)");
    row("GPUs", s.gpus.length ? s.gpus.map((g) => `${g.index}: ${g.name} (${int(g.vramMb)} MiB)`).join(", ") : "none");
    row("Jobs", `${int(s.inflight)} in flight; served ${int(s.requestsServed)} requests, ${int(s.tokensServed)} tokens`);
  }
  row("Earnings", earningsLine(report.earnings));
  if (s) {
    out.push("", `Instances (${s.instances.length})`);
    if (s.instances.length === 0) out.push("  none");
    else {
      out.push(...table(
        ["CHUTE", "INSTANCE", "ENGINE", "MANAGED", "GPUS", "CAPACITY", "IN-FLIGHT", "REQUESTS", "TOKENS", "STATE"],
        s.instances.map((i) => [
          i.chute, i.instanceId, i.engine, i.managed ? "yes" : "no", i.gpus.join(",") || "-", int(i.capacity),
          int(i.inflight), int(i.requestsServed), int(i.tokensServed), i.draining ? "draining" : "serving",
        ]),
      ));
    }
    if (s.deploying.length) {
      out.push("", `Deploying (${s.deploying.length})`);
      out.push(...table(
        ["OFFER", "CHUTE", "SINCE"],
        s.deploying.map((d) => [d.offerId, d.chute, `${d.since} (${duration(now.getTime() - Date.parse(d.since))})`]),
      ));
    }
  }
  return out.join("\n");
}

/** The machine-readable form (`--json`). */
export function statusJson(report: StatusReport): Record<string, unknown> {
  return {
    config: report.config,
    statusFile: report.statusFile,
    running: report.state === "running",
    state: report.state,
    ...(report.reason ? { reason: report.reason } : {}),
    status: report.status,
    earnings: report.earnings,
  };
}
