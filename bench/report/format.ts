export type Align = "left" | "right";

/** A Markdown table whose columns are padded, so it reads the same in a terminal. */
export function table(headers: string[], rows: string[][], align: Align[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const cell = (text: string, i: number): string =>
    (align[i] ?? (i === 0 ? "left" : "right")) === "left" ? text.padEnd(widths[i]!) : text.padStart(widths[i]!);
  const line = (cells: string[]): string => `| ${cells.map(cell).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => ((align[i] ?? (i === 0 ? "left" : "right")) === "left" ? ` ${"-".repeat(w)} ` : ` ${"-".repeat(w - 1)}: `)).join("|")}|`;
  return [line(headers), rule, ...rows.map((r) => line(headers.map((_, i) => r[i] ?? "")))].join("\n");
}

const DASH = "—";

/** A count or a rate: no decimals from 100 up. */
export function num(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
  return value.toFixed(1);
}

/** Milliseconds, with the precision that matters at that size. */
export function ms(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  const abs = Math.abs(value);
  return value.toFixed(abs < 10 ? 2 : abs < 100 ? 1 : 0);
}

/** A signed difference in milliseconds. */
export function deltaMs(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  return `${value >= 0 ? "+" : ""}${ms(value)}`;
}

export function ratio(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  return `${value >= 10 ? value.toFixed(1) : value.toFixed(2)}×`;
}

export function percent(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return DASH;
  return `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? DASH : (bytes / 2 ** 20).toFixed(0);
}

export { DASH };
