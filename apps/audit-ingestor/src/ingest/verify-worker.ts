/**
 * Worker thread of `VerifyPool`: verifies the batches posted to it with `verifyEntries`. `workerData` is
 * `{ auditKeyHex }` (absent in development mode). Requests are `{ id, entries }`, replies `{ id, outcomes }`,
 * both flat arrays (`encodeEntries`, `encodeOutcomes`).
 */
import { parentPort, workerData } from "node:worker_threads";

import { decodeEntries, encodeOutcomes, verifyEntries } from "./verify.js";

const { auditKeyHex } = workerData as { auditKeyHex: string | undefined };
const auditKey = auditKeyHex === undefined ? undefined : Buffer.from(auditKeyHex, "hex");

parentPort?.on("message", (request: { id: number; entries: Array<string | number> }) => {
  const outcomes = encodeOutcomes(verifyEntries(decodeEntries(request.entries), auditKey));
  parentPort?.postMessage({ id: request.id, outcomes }, [outcomes.bytes]);
});
