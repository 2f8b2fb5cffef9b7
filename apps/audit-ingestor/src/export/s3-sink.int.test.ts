import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { startS3 } from "@caracal/testkit";
import type { TestS3 } from "@caracal/testkit";
import { afterEach, describe, expect, it } from "vitest";

import { MIN_PART_BYTES, S3StreamSink } from "./s3-sink.js";
import { getBytes, s3Client } from "./test-support/fixtures.js";

let s3: TestS3 | undefined;
afterEach(async () => {
  await s3?.stop();
  s3 = undefined;
});

/** Writes `chunks` chunks of `size` pseudo-random bytes through the sink as a ParquetWriter would. */
async function pump(sink: S3StreamSink, chunks: number, size: number): Promise<Uint8Array> {
  const all = new Uint8Array(chunks * size);
  let x = 12345;
  for (let c = 0; c < chunks; c++) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      bytes[i] = x >>> 24;
    }
    sink.appendBytes(bytes);
    all.set(bytes, c * size);
    await sink.flush();
  }
  await sink.finish();
  return all;
}

describe("S3StreamSink", () => {
  it("uploads parts as they fill, holding at most one part plus one row group", async () => {
    s3 = await startS3();
    const client = s3Client(s3);
    const sink = new S3StreamSink({ s3: client, bucket: s3.bucket, key: "big.bin", partSizeBytes: MIN_PART_BYTES });
    const chunk = 1024 * 1024;
    const written = await pump(sink, 12, chunk);
    expect(sink.partCount).toBe(3); // 5 MiB + 5 MiB + 2 MiB
    expect(sink.peakBufferedBytes).toBeLessThanOrEqual(MIN_PART_BYTES + chunk);
    const back = new Uint8Array(await getBytes(client, s3.bucket, "big.bin"));
    expect(Buffer.compare(Buffer.from(back), Buffer.from(written))).toBe(0);
    client.destroy();
  });

  it("sends a file smaller than one part with a single PutObject", async () => {
    s3 = await startS3();
    const client = s3Client(s3);
    const sink = new S3StreamSink({ s3: client, bucket: s3.bucket, key: "small.bin", metadata: { rows: "7" } });
    const written = await pump(sink, 3, 1000);
    expect(sink.partCount).toBe(0);
    const head = await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: "small.bin" }));
    expect(head.ContentLength).toBe(3000);
    expect(head.Metadata?.rows).toBe("7");
    expect(Buffer.from(await getBytes(client, s3.bucket, "small.bin")).equals(Buffer.from(written))).toBe(true);
    client.destroy();
  });
});
