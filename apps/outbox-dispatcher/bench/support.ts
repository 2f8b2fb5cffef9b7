/** What the outbox benches share: a backlog of pending rows, and waiting for a dispatcher to drain it. */
import type { Fields } from "@caracal/streams-core";
import type pg from "pg";

import type { DispatcherMetrics } from "../src/metrics.js";

/** Inserts pending `event_outbox` rows, one per id, all on `stream`, in one statement. */
export async function insertPending(pool: pg.Pool, stream: string, ids: readonly string[], payloads: readonly Fields[]): Promise<void> {
  await pool.query(`INSERT INTO event_outbox (id, stream_name, payload_json) SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])`, [
    ids,
    ids.map(() => stream),
    payloads.map((p) => JSON.stringify(p)),
  ]);
}

/**
 * Resolves once the dispatcher has counted `rows` rows dispatched (it counts a row once its XADD is
 * acknowledged): read in this process, so waiting costs the measurement no Redis round trips.
 */
export async function untilDispatched(metrics: DispatcherMetrics, rows: number): Promise<void> {
  const dispatched = async () => (await metrics.dispatched.get()).values.reduce((sum, v) => sum + v.value, 0);
  while ((await dispatched()) < rows) await new Promise((r) => setTimeout(r, 5));
}
