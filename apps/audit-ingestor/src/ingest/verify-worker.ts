/**
 * Worker thread of `VerifyPool`: verifies the batches posted to it with `verifyEntries`. `workerData` is
 * `{ auditKeyHex }` (absent in development mode). Requests are `{ id, entries }`, replies `{ id, outcomes }`.
 */
import { parentPort, workerData } from "node:worker_threads";

import type { EntryToVerify } from "./verify.js";
import { verifyEntries } from "./verify.js";

const { auditKeyHex } = workerData as { auditKeyHex: string | undefined };
const auditKey = auditKeyHex === undefined ? undefined : Buffer.from(auditKeyHex, "hex");

parentPort?.on("message", (request: { id: number; entries: EntryToVerify[] }) => {
  parentPort?.postMessage({ id: request.id, outcomes: verifyEntries(request.entries, auditKey) });
});
