// Child process for the audit publisher SIGTERM test: publishes AUDIT_CHILD_COUNT events into a
// buffer that would not flush for a minute, prints "ready", and on SIGTERM closes the publisher
// (flush or spill) before exiting. Runs the BUILT package (dist), like a real producer would.
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import process from "node:process";
import { setInterval } from "node:timers";

import { AuditPublisher, connectRedis } from "../../dist/index.js";

const env = process.env;
const redis = connectRedis(env.REDIS_URL);
redis.on("error", () => undefined);
const publisher = new AuditPublisher({
  redis,
  signing: { mode: "dev", signer: undefined },
  auditKey: Buffer.from(env.AUDIT_HMAC_KEY, "hex"),
  keyPrefix: env.KEY_PREFIX ?? "",
  replayDir: env.AUDIT_REPLAY_DIR,
  flushIntervalMs: 60_000,
  maxBatchSize: 100_000,
  maxBufferedEvents: 100_000,
  publishTimeoutMs: 500,
});

process.once("SIGTERM", () => {
  publisher
    .close()
    .then(() => redis.disconnect())
    .then(() => process.exit(0), () => process.exit(3));
});

const count = Number(env.AUDIT_CHILD_COUNT ?? "100");
for (let i = 0; i < count; i++) {
  await publisher.publish({
    id: `${env.ID_PREFIX}-${i}`,
    zone_id: `zone-${i % 3}`,
    event_type: "token_exchange",
    request_id: randomBytes(8).toString("hex"),
    decision: i % 2 === 0 ? "allow" : "deny",
    evaluation_status: "complete",
    determining_policies_json: [],
    diagnostics_json: [],
    occurred_at: new Date().toISOString(),
  });
}
process.stdout.write("ready\n");
setInterval(() => undefined, 1000);
