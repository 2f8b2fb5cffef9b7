import type { Fields } from "./codec.js";
import { maxLenOf, streamKey } from "./registry.js";
import type { CommandResult, RedisClient } from "./redis.js";
import { isCluster, sendCommands } from "./redis.js";
import { EncodedCommand, RespWriter, encodeXadd } from "./resp.js";
import type { SignaturePolicy } from "./signing.js";
import { SIGNATURE_FIELD, SIGNATURE_V2_FIELD } from "./signing.js";

export interface PublishEntry {
  /** Logical stream key from the registry (signed as is; the key prefix is added when writing). */
  readonly stream: string;
  readonly fields: Fields;
}

/** Commands per pipeline within a batch (see `publishIndexes`). */
const PIPELINE_CHUNK = 100;

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
  /** This publisher's key prefix, after the client's own `keyPrefix` option (ioredis would add that one). */
  private readonly keyPrefix: string;
  private readonly maxLenFor: (stream: string) => number;
  /** Reused for every command: a command is encoded and taken out with no await in between. */
  private readonly writer = new RespWriter();

  constructor(private readonly options: PublisherOptions) {
    const clientPrefix = (options.redis.options as { keyPrefix?: string }).keyPrefix ?? "";
    this.keyPrefix = clientPrefix + (options.keyPrefix ?? "");
    this.maxLenFor = options.maxLenFor ?? maxLenOf;
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
   * A failure, of one entry or of the connection, is reported in the outcome of each entry it hit.
   */
  async publishBatch(entries: readonly PublishEntry[]): Promise<PublishOutcome[]> {
    if (entries.length === 0) return [];
    const outcomes: PublishOutcome[] = new Array(entries.length);
    const groups = isCluster(this.options.redis) ? groupIndexesByStream(entries) : [entries.map((_, i) => i)];
    await Promise.all(groups.map((indexes) => this.publishIndexes(entries, indexes, outcomes)));
    return outcomes;
  }

  /**
   * Sends the entries as pipelines of PIPELINE_CHUNK commands on one connection, in order: while Redis
   * executes one chunk, the next one is signed and encoded, so signing overlaps the round trip.
   */
  private async publishIndexes(entries: readonly PublishEntry[], indexes: readonly number[], outcomes: PublishOutcome[]): Promise<void> {
    const sent: Array<Promise<void>> = [];
    for (let start = 0; start < indexes.length; start += PIPELINE_CHUNK) {
      const chunk = indexes.slice(start, start + PIPELINE_CHUNK);
      const commands: EncodedCommand[] = new Array(chunk.length);
      const signer = this.options.signing.signer;
      for (let k = 0; k < chunk.length; k++) {
        const i = chunk[k] as number;
        const entry = entries[i] as PublishEntry;
        const key = streamKey(entry.stream, this.keyPrefix);
        const signed = signer?.signatures(entry.stream, entry.fields);
        const encoded = encodeXadd(this.writer, key, this.maxLenFor(entry.stream), entry.fields, signed === undefined ? undefined : [
          { field: SIGNATURE_V2_FIELD, value: signed.sig2 },
          { field: SIGNATURE_FIELD, value: signed.sig },
        ]);
        commands[k] = new EncodedCommand("xadd", key, encoded);
      }
      sent.push(
        sendCommands(this.options.redis, commands).then((results) => {
          chunk.forEach((entryIndex, k) => {
            const [error, id] = results[k] as CommandResult;
            outcomes[entryIndex] = error ? { ok: false, error } : { ok: true, id: id as string };
          });
        }),
      );
      // The chunk just queued left in one write; yield so that replies already in are handled before the
      // next chunk is signed.
      if (start + PIPELINE_CHUNK < indexes.length) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    await Promise.all(sent);
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
