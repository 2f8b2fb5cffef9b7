/**
 * Output of every command: a table that fits the terminal for people, or `--json` for scripts. Tables
 * truncate wide cells (with "…") so that a row never wraps; JSON is never truncated.
 */
import Table from "cli-table3";

export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Terminal width; undefined when stdout is not a terminal (then 120 is assumed). */
  readonly columns: number | undefined;
  readonly isTTY: boolean;
  /** Asks a yes/no question on the terminal; resolves false when there is no terminal. */
  confirm(question: string): Promise<boolean>;
}

export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

/** Renders rows under a header, each column at most as wide as the terminal allows. */
export function renderTable(io: Io, head: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const width = io.columns ?? 120;
  const cells = rows.map((r) => r.map((c) => (c === undefined || c === null ? "" : String(c))));
  // natural width per column, then shrink the widest until the table fits (3 chars of border per column)
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? "").length)));
  const budget = Math.max(head.length * 6, width - (head.length * 3 + 1));
  while (widths.reduce((a, b) => a + b, 0) > budget) {
    const widest = widths.indexOf(Math.max(...widths));
    if (widths[widest]! <= 6) break;
    widths[widest] = widths[widest]! - 1;
  }
  const table = new Table({
    head: [...head],
    colWidths: widths.map((w) => w + 2),
    style: { head: [], border: [], compact: true },
    wordWrap: false,
  });
  for (const r of cells) table.push(r.map((c, i) => truncate(c, widths[i]!)));
  return table.toString();
}

export function truncate(text: string, width: number): string {
  const oneLine = text.replace(/\s+/g, " ");
  return oneLine.length <= width ? oneLine : `${oneLine.slice(0, Math.max(0, width - 1))}…`;
}

/** "3s", "4m12s", "2h5m", "3d4h": an age for people. */
export function formatAge(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return "-";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d${Math.floor((s % 86_400) / 3600)}h`;
}

/** Age in seconds of a stream entry id (`<ms>-<seq>`) at `now`. */
export function entryIdAgeSeconds(id: string | null | undefined, now = Date.now()): number | undefined {
  if (id === null || id === undefined) return undefined;
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) ? Math.max(0, (now - ms) / 1000) : undefined;
}
