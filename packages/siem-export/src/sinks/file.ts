/**
 * NDJSON files in a directory, one event per line, rotated by size and age:
 * `caracal-audit-<UTC time>-<pid>.ndjson`. A batch is accepted once written and flushed to disk
 * (fdatasync), so a crash after the ack loses nothing.
 */
import { mkdir, open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";

import type { SinkFormat } from "../config.js";
import { formatted } from "../formats.js";
import type { ExportEvent } from "../formats.js";
import { SinkDownError } from "./sink.js";
import type { Sink } from "./sink.js";

export class FileSink implements Sink {
  readonly name = "file" as const;
  private file: { handle: FileHandle; bytes: number; openedAt: number; path: string } | undefined;

  constructor(private readonly options: { dir: string; maxBytes: number; maxAgeMs: number; format: SinkFormat; now?: () => number }) {}

  /** The file being written, if any (tests). */
  get currentPath(): string | undefined {
    return this.file?.path;
  }

  async send(events: readonly ExportEvent[]): Promise<Map<number, string>> {
    const text = events.map((e) => `${JSON.stringify(formatted(e, this.options.format))}\n`).join("");
    try {
      const file = await this.current();
      await file.handle.write(text);
      await file.handle.datasync();
      file.bytes += Buffer.byteLength(text);
    } catch (error) {
      await this.closeFile();
      throw new SinkDownError(`file sink: ${(error as Error).message}`, { cause: error });
    }
    return new Map();
  }

  private async current() {
    const now = (this.options.now ?? Date.now)();
    const f = this.file;
    if (f !== undefined && f.bytes < this.options.maxBytes && now - f.openedAt < this.options.maxAgeMs) return f;
    await this.closeFile();
    await mkdir(this.options.dir, { recursive: true });
    const stamp = new Date(now).toISOString().replace(/[-:]/g, "").replace(".", "");
    let path = join(this.options.dir, `caracal-audit-${stamp}-${process.pid}.ndjson`);
    for (let n = 1; ; n++) {
      try {
        const handle = await open(path, "wx");
        this.file = { handle, bytes: 0, openedAt: now, path };
        return this.file;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        path = join(this.options.dir, `caracal-audit-${stamp}-${process.pid}-${n}.ndjson`);
      }
    }
  }

  private async closeFile(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    await f?.handle.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.closeFile();
  }
}
