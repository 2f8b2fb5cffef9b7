import { errorMessage } from "@caracal/streams-core";
import type pg from "pg";
import type { Logger } from "pino";

import { retentionSql } from "./sql.js";

/**
 * Deletes dispatched rows older than the retention, in small statements (`batchSize` rows each) on its own
 * timer, so the sweep never holds many row locks or competes with dispatch for long. Failed and pending
 * rows are never deleted. Several replicas may sweep at once: each DELETE takes rows the others skip or
 * find gone, which is harmless.
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly options: { pool: pg.Pool; retentionMs: number; intervalMs: number; batchSize: number; logger: Logger },
  ) {}

  start(): void {
    const tick = () => {
      this.running = this.sweep()
        .then(() => undefined)
        .catch((error) => this.options.logger.warn({ err: errorMessage(error) }, "outbox retention sweep failed"))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.options.intervalMs);
  }

  /** One full sweep; resolves to the number of rows deleted. */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      if (this.stopped) break;
      const { rows } = await this.options.pool.query<{ n: number }>(retentionSql(this.options.retentionMs, this.options.batchSize));
      const n = rows[0]?.n ?? 0;
      total += n;
      if (n < this.options.batchSize) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    if (total > 0) this.options.logger.info({ deleted: total }, "outbox retention: dispatched rows deleted");
    return total;
  }

  /** Idempotent; waits for a sweep in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
