/**
 * Child process of the crash test: consumes the revocation topic with a handler that never returns, and
 * prints `received <n>` each time a message reaches the handler. The parent SIGKILLs it mid-batch.
 * argv: redisUrl keyPrefix keyHex consumerName
 */
import { Redis } from "ioredis";

import { StreamConsumer } from "../consumer/stream-consumer.js";
import { StreamSigner } from "../signing.js";
import { group, topic } from "./harness.js";

const [redisUrl, keyPrefix, keyHex, consumerName] = process.argv.slice(2);
if (redisUrl === undefined || keyPrefix === undefined || keyHex === undefined || consumerName === undefined) {
  throw new Error("usage: crash-consumer <redisUrl> <keyPrefix> <keyHex> <consumer>");
}
const redis = new Redis(redisUrl);
let received = 0;
const consumer = new StreamConsumer({
  redis,
  topic,
  group,
  consumer: consumerName,
  keyPrefix,
  signing: { mode: "stable", signer: StreamSigner.fromHex(keyHex) },
  startId: "0",
  blockMs: 100,
  batchSize: 50,
  concurrency: 50,
  handleMessage: async () => {
    received++;
    process.stdout.write(`received ${received}\n`);
    await new Promise(() => undefined);
  },
});
void consumer.run(new AbortController().signal);
