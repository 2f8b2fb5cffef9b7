import type { Logger } from "pino";
import pg from "pg";

import { backoffMs } from "./backoff.js";

/**
 * LISTENs on one channel on a dedicated connection (a pooled connection would lose the LISTEN when it is
 * returned). On loss it reconnects with backoff and calls `onWake` once connected again, because
 * notifications sent while it was away are gone. The dispatcher's poll covers the gap meanwhile.
 */
export class NotifyListener {
  private client: pg.Client | undefined;
  private closed = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  /** True while the LISTEN connection is up (exported as a metric, not a readiness condition). */
  listening = false;

  constructor(
    private readonly options: { connectionString: string; channel: string; onWake: () => void; logger: Logger },
  ) {}

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.options.connectionString, application_name: "outbox-dispatcher-listen" });
    this.client = client;
    let lost = false;
    const onLoss = (error?: Error) => {
      if (lost) return;
      lost = true;
      this.listening = false;
      client.removeAllListeners("notification");
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.failures++;
      const delayMs = backoffMs(this.failures, 250);
      this.options.logger.warn({ err: error?.message, delayMs }, "outbox LISTEN connection lost: reconnecting");
      this.timer = setTimeout(() => void this.connect(), delayMs);
    };
    client.on("error", onLoss);
    client.on("end", () => onLoss());
    client.on("notification", () => this.options.onWake());
    try {
      await client.connect();
      await client.query(`LISTEN ${client.escapeIdentifier(this.options.channel)}`);
      if (this.closed) {
        await client.end().catch(() => undefined);
        return;
      }
      this.listening = true;
      if (this.failures > 0) this.options.logger.info("outbox LISTEN connection restored");
      this.failures = 0;
      this.options.onWake();
    } catch (error) {
      onLoss(error as Error);
    }
  }

  /** Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.listening = false;
    if (this.timer) clearTimeout(this.timer);
    await this.client?.end().catch(() => undefined);
  }
}
