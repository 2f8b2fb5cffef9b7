/**
 * A pool of worker threads running `verifyEntries`, so that verification and hashing (most of the
 * ingest's CPU) overlap with the main thread's reads, ledger transactions and acks. A batch goes to the
 * worker with the fewest entries in flight. A worker that dies fails its batches with a TransientError
 * (the entries stay pending and are delivered again) and is replaced.
 */
import { existsSync } from "node:fs";
import { Worker } from "node:worker_threads";

import { TransientError } from "@caracal/streams-core";
import type { Logger } from "pino";

import type { EncodedOutcomes, EntryToVerify, Verifier, VerifyOutcome } from "./verify.js";
import { decodeOutcomes, encodeEntries } from "./verify.js";

interface Request {
  readonly resolve: (outcomes: VerifyOutcome[]) => void;
  readonly reject: (error: unknown) => void;
  readonly size: number;
}

interface Slot {
  worker: Worker;
  readonly inFlight: Map<number, Request>;
  entries: number;
}

/**
 * The compiled worker next to this module; when running from source (tests under vitest), a bootstrap
 * that registers tsx in the worker thread and imports the TypeScript file.
 */
function newWorker(workerData: unknown): Worker {
  // A worker verifies one batch at a time: a small young generation is enough, and each MiB of it is RSS.
  const resourceLimits = { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB };
  const js = new URL("./verify-worker.js", import.meta.url);
  if (existsSync(js)) return new Worker(js, { workerData, resourceLimits });
  const ts = new URL("./verify-worker.ts", import.meta.url).href;
  const bootstrap = `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(ts)}); })`;
  return new Worker(bootstrap, { eval: true, workerData, resourceLimits });
}

/** Young generation of a worker, in MiB (V8's default is 3 × the 16 MiB semi-space). */
const WORKER_YOUNG_GENERATION_MB = 8;

export class VerifyPool implements Verifier {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    size: number,
    private readonly auditKey: Buffer | undefined,
    private readonly logger?: Logger,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`verify pool size must be a positive integer, got ${size}`);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  verify(entries: readonly EntryToVerify[]): Promise<VerifyOutcome[]> {
    if (this.closed) return Promise.reject(new TransientError("verify pool is closed"));
    if (entries.length === 0) return Promise.resolve([]);
    const slot = this.slots.reduce((a, b) => (b.entries < a.entries ? b : a));
    const id = this.nextId++;
    return new Promise<VerifyOutcome[]>((resolve, reject) => {
      slot.inFlight.set(id, { resolve, reject, size: entries.length });
      slot.entries += entries.length;
      slot.worker.postMessage({ id, entries: encodeEntries(entries) });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  private spawn(): Slot {
    const worker = newWorker({ auditKeyHex: this.auditKey?.toString("hex") });
    const slot: Slot = { worker, inFlight: new Map(), entries: 0 };
    worker.on("message", (reply: { id: number; outcomes: EncodedOutcomes }) => {
      const request = slot.inFlight.get(reply.id);
      if (request === undefined) return;
      slot.inFlight.delete(reply.id);
      slot.entries -= request.size;
      request.resolve(decodeOutcomes(reply.outcomes));
    });
    const fail = (why: string) => {
      if (this.slots.includes(slot) && !this.closed) {
        this.logger?.error({ why }, "audit verify worker died: replacing it; its batches stay pending");
        this.slots[this.slots.indexOf(slot)] = this.spawn();
      }
      for (const request of slot.inFlight.values()) request.reject(new TransientError(`verify worker died: ${why}`));
      slot.inFlight.clear();
      slot.entries = 0;
    };
    worker.on("error", (error) => fail(error.message));
    worker.on("exit", (code) => fail(`exit code ${code}`));
    return slot;
  }
}
