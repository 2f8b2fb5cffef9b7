/**
 * A real ingestor process for crash tests (run with `node --import tsx`): config from the environment,
 * exactly as main.ts. With CRASH_AFTER_BATCHES=n it SIGKILLs itself right after the n-th batch commit and
 * before that batch is acked: the worst moment for at-least-once (stored, still pending).
 */
import { startOpsServer } from "@caracal/service-kit";
import { pino } from "pino";

import { startAuditIngestor } from "../app.js";
import { loadConfig } from "../config.js";

const config = loadConfig(process.env);
const logger = pino({ level: process.env.LOG_LEVEL ?? "warn" });
const crashAfter = Number(process.env.CRASH_AFTER_BATCHES ?? "0");
let batches = 0;
const controller = new AbortController();
process.once("SIGTERM", () => controller.abort());
const app = await startAuditIngestor(config, {
  logger,
  signal: controller.signal,
  blockMs: 200,
  afterBatchWrite: () => {
    batches++;
    if (crashAfter > 0 && batches >= crashAfter) process.kill(process.pid, "SIGKILL");
  },
});
const ops = await startOpsServer({ port: config.port, host: "127.0.0.1", registry: app.metrics.registry, readiness: app.readiness });
process.stdout.write(`READY ${ops.port}\n`);
await app.done;
await ops.close();
process.stdout.write("STOPPED\n");
