/**
 * A hyparquet-writer `Writer` that streams a file to S3. Bytes of each flushed row group move out of the
 * writer's buffer into a part buffer; once it holds `partSizeBytes` it is uploaded as one part of a
 * multipart upload (awaited, so a slow S3 slows the producer instead of growing memory). A file smaller
 * than one part is sent with a single PutObject. Either way the object appears only at the end, and only
 * if absent (`If-None-Match: *`, where the store supports it; the exporter also checks with HeadObject
 * first, since s3rver ignores the header).
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import type { CompletedPart, S3Client } from "@aws-sdk/client-s3";
import { CaracalError } from "@caracal/streams-core";
import { ByteWriter } from "hyparquet-writer";

/** S3's lower bound for every part but the last. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;

export interface S3SinkOptions {
  s3: S3Client;
  bucket: string;
  key: string;
  /** Default 8 MiB; at least 5 MiB (S3's minimum part size). */
  partSizeBytes?: number;
  metadata?: Record<string, string>;
  contentType?: string;
}

/** The object appeared meanwhile (412 on a conditional write): another writer finished it first. */
export class ObjectExistsError extends CaracalError {
  readonly code = "OBJECT_EXISTS";
  readonly permanent = true;
}

export class S3StreamSink extends ByteWriter {
  private readonly options: S3SinkOptions;
  private readonly partSizeBytes: number;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private uploadId: string | undefined;
  private readonly parts: CompletedPart[] = [];
  /** Bytes handed to S3 so far, and the most bytes ever held here at once (for tests and metrics). */
  uploadedBytes = 0;
  peakBufferedBytes = 0;

  /** Parts uploaded so far (0 when the file went in one PutObject). */
  get partCount(): number {
    return this.parts.length;
  }

  constructor(options: S3SinkOptions) {
    super(1024 * 1024);
    this.options = options;
    this.partSizeBytes = Math.max(MIN_PART_BYTES, options.partSizeBytes ?? 8 * 1024 * 1024);
  }

  /** Called by ParquetWriter after each row group. */
  async flush(): Promise<void> {
    this.drainBuffer();
    while (this.pendingBytes >= this.partSizeBytes) await this.uploadPart(this.takePending(this.partSizeBytes));
  }

  /** Called by ParquetWriter.finish after the footer: sends the rest and completes the object. */
  override async finish(): Promise<void> {
    this.drainBuffer();
    const rest = this.takePending(this.pendingBytes);
    try {
      if (this.uploadId === undefined) {
        await this.conditional((IfNoneMatch) =>
          this.options.s3.send(
            new PutObjectCommand({
              Bucket: this.options.bucket,
              Key: this.options.key,
              Body: rest,
              ContentLength: rest.byteLength,
              ContentType: this.options.contentType,
              Metadata: this.options.metadata,
              IfNoneMatch,
            }),
          ),
        );
        this.uploadedBytes += rest.byteLength;
        return;
      }
      if (rest.byteLength > 0) await this.uploadPart(rest);
      const uploadId = this.uploadId;
      await this.conditional((IfNoneMatch) =>
        this.options.s3.send(
          new CompleteMultipartUploadCommand({
            Bucket: this.options.bucket,
            Key: this.options.key,
            UploadId: uploadId,
            MultipartUpload: { Parts: this.parts },
            IfNoneMatch,
          }),
        ),
      );
    } catch (error) {
      await this.abort();
      if (isPreconditionFailed(error)) throw new ObjectExistsError(`s3://${this.options.bucket}/${this.options.key} exists`, { cause: error });
      throw error;
    }
  }

  /**
   * Sends with `If-None-Match: *`; a store that rejects the header as not implemented (some S3-compatible
   * services) gets the request again without it: the exporter checked with HeadObject just before.
   */
  private async conditional<T>(send: (ifNoneMatch: string | undefined) => Promise<T>): Promise<T> {
    try {
      return await send("*");
    } catch (error) {
      if (!isNotImplemented(error)) throw error;
      return send(undefined);
    }
  }

  /** Drops a started multipart upload (its parts cost storage until aborted). Never throws. */
  async abort(): Promise<void> {
    const uploadId = this.uploadId;
    this.uploadId = undefined;
    this.pending = [];
    this.pendingBytes = 0;
    if (uploadId === undefined) return;
    await this.options.s3
      .send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.options.key, UploadId: uploadId }))
      .catch(() => undefined);
  }

  private drainBuffer(): void {
    if (this.index === 0) return;
    this.pending.push(new Uint8Array(this.buffer.slice(0, this.index)));
    this.pendingBytes += this.index;
    this.index = 0;
    this.peakBufferedBytes = Math.max(this.peakBufferedBytes, this.pendingBytes);
  }

  private takePending(bytes: number): Uint8Array {
    const out = new Uint8Array(bytes);
    let filled = 0;
    while (filled < bytes) {
      const head = this.pending[0];
      if (head === undefined) break;
      const n = Math.min(head.byteLength, bytes - filled);
      out.set(head.subarray(0, n), filled);
      filled += n;
      if (n === head.byteLength) this.pending.shift();
      else this.pending[0] = head.subarray(n);
    }
    this.pendingBytes -= filled;
    return out;
  }

  private async uploadPart(body: Uint8Array): Promise<void> {
    try {
      if (this.uploadId === undefined) {
        const created = await this.options.s3.send(
          new CreateMultipartUploadCommand({
            Bucket: this.options.bucket,
            Key: this.options.key,
            ContentType: this.options.contentType,
            Metadata: this.options.metadata,
          }),
        );
        if (created.UploadId === undefined) throw new Error("CreateMultipartUpload returned no UploadId");
        this.uploadId = created.UploadId;
      }
      const partNumber = this.parts.length + 1;
      const result = await this.options.s3.send(
        new UploadPartCommand({
          Bucket: this.options.bucket,
          Key: this.options.key,
          UploadId: this.uploadId,
          PartNumber: partNumber,
          Body: body,
          ContentLength: body.byteLength,
        }),
      );
      this.parts.push({ PartNumber: partNumber, ETag: result.ETag });
      this.uploadedBytes += body.byteLength;
    } catch (error) {
      await this.abort();
      throw error;
    }
  }
}

export function isPreconditionFailed(error: unknown): boolean {
  return error instanceof S3ServiceException && (error.$metadata.httpStatusCode === 412 || error.name === "PreconditionFailed");
}

export function isNotFound(error: unknown): boolean {
  return error instanceof S3ServiceException && (error.$metadata.httpStatusCode === 404 || error.name === "NotFound" || error.name === "NoSuchKey");
}

export function isNotImplemented(error: unknown): boolean {
  return error instanceof S3ServiceException && (error.$metadata.httpStatusCode === 501 || error.name === "NotImplemented");
}
