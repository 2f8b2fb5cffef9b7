import type { Fields } from "./codec.js";
import { fieldsToArgs } from "./codec.js";
import { maxLenOf, streamKey } from "./registry.js";
import type { RedisClient } from "./redis.js";
import { isCluster } from "./redis.js";
import type { SignaturePolicy } from "./signing.js";
import { SIGNATURE_FIELD } from "./signing.js";

export interface PublishEntry {
  /** Logical stream key from the registry (signed as is; the key prefix is added when writing). */
  readonly stream: string;
  readonly fields: Fields;
}

export type PublishOutcome = { ok: true; id: string } | { ok: false; error: Error };

export interface PublisherOptions {
  redis: RedisClient;
  signing: SignaturePolicy;
  /** Prepended to every stream key (tests, tenants). Not part of the signature. Default "". */
  keyPrefix?: string;
  /** MAXLEN ~ per stream; default: the registry's value for the stream. */
  maxLenFor?: (stream: string) => number;
}

/**
 * Signs and XADDs entries with `MAXLEN ~`. A batch is one pipelined round trip per stream (on a
 * cluster, a pipeline must stay within one slot, so entries are grouped by stream key).
 * Safe to call concurrently.
 */
export class StreamPublisher {
  private readonly keyPrefix: string;
  private readonly maxLenFor: (stream: string) => number;

  constructor(private readonly options: PublisherOptions) {
    this.keyPrefix = options.keyPrefix ?? "";
    this.maxLenFor = options.maxLenFor ?? maxLenOf;
  }

  /** Fields as they will be sent: any `_sig` given by the caller is replaced by this publisher's own. */
  prepare(entry: PublishEntry): Fields {
    const { [SIGNATURE_FIELD]: _ignored, ...unsigned } = entry.fields;
    const signer = this.options.signing.signer;
    return signer === undefined ? unsigned : signer.signFields(entry.stream, unsigned);
  }

  /** Publishes one entry; resolves to its stream entry id. */
  async publish(stream: string, fields: Fields): Promise<string> {
    const [outcome] = await this.publishBatch([{ stream, fields }]);
    if (outcome === undefined) throw new Error("publish returned no outcome");
    if (!outcome.ok) throw outcome.error;
    return outcome.id;
  }

  /**
   * Publishes a batch; the outcome of entry i is at index i. Entries of one stream keep their order.
   * A failure of the whole connection rejects; a per-entry failure is reported in its outcome.
   */
  async publishBatch(entries: readonly PublishEntry[]): Promise<PublishOutcome[]> {
    if (entries.length === 0) return [];
    const outcomes: PublishOutcome[] = new Array(entries.length);
    const groups = isCluster(this.options.redis) ? groupIndexesByStream(entries) : [entries.map((_, i) => i)];
    await Promise.all(
      groups.map(async (indexes) => {
        const pipeline = this.options.redis.pipeline();
        for (const i of indexes) {
          const entry = entries[i] as PublishEntry;
          pipeline.xadd(
            streamKey(entry.stream, this.keyPrefix),
            "MAXLEN",
            "~",
            this.maxLenFor(entry.stream),
            "*",
            ...fieldsToArgs(this.prepare(entry)),
          );
        }
        const results = await pipeline.exec();
        if (results === null) throw new Error("pipeline was discarded");
        indexes.forEach((entryIndex, k) => {
          const [error, id] = results[k] ?? [new Error("missing pipeline reply"), null];
          outcomes[entryIndex] = error ? { ok: false, error } : { ok: true, id: id as string };
        });
      }),
    );
    return outcomes;
  }
}

function groupIndexesByStream(entries: readonly PublishEntry[]): number[][] {
  const groups = new Map<string, number[]>();
  entries.forEach((e, i) => {
    const list = groups.get(e.stream);
    if (list) list.push(i);
    else groups.set(e.stream, [i]);
  });
  return [...groups.values()];
}
