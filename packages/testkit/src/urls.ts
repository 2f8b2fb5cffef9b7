/** Replaces the database name of a PostgreSQL URL. No imports: benchmarks load it through bench-report. */
export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}
