/**
 * The audit replay directory (`AUDIT_REPLAY_DIR`): where audit frames go when Redis cannot take them.
 *
 * File format, shared by the audit publisher (writer and replayer) and the audit ingestor (reader at
 * its own start):
 * - name `audit-<timestamp>-<pid>-<n>.ndjson`: `<timestamp>` is the writing publisher's start time in
 *   epoch milliseconds (13 digits), `<pid>` its process id, `<n>` a 6-digit zero-padded batch ordinal
 *   of that publisher. Sorting names as strings gives the order the events were published in, per
 *   producer process.
 * - content: UTF-8 NDJSON, one audit frame per line: a JSON object of the frame's string fields
 *   (`id`, `data`, `sig`, any optional field such as `outbox_id`), never `_sig` (the stream signature
 *   is computed by whoever XADDs the line). `sig` covers `data` exactly as written.
 * - atomicity: a file is written under a temporary name ending in `.tmp`, fsynced, renamed to `<name>` and the directory is
 *   fsynced. Readers ignore `.tmp` files (a crash mid-write leaves only a `.tmp`, whose events were never
 *   counted as handled), so a `.ndjson` file is always complete and never changes after the rename.
 * - a reader deletes a file only after every line was durably handled (XADDed, or inserted); two readers
 *   racing on one file cause duplicates, which the ingestor absorbs (same id, same content: no-op).
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";

import type { Fields } from "../codec.js";

const FILE_PATTERN = /^audit-\d+-\d+-\d+\.ndjson$/;
const SIGNATURE_FIELD = "_sig";

/** The file name for a batch (see the format above). */
export function replayFileName(startedAtMs: number, pid: number, ordinal: number): string {
  return `audit-${String(startedAtMs).padStart(13, "0")}-${pid}-${String(ordinal).padStart(6, "0")}.ndjson`;
}

/** True for a complete replay file's name (not a `.tmp`, not a foreign file). */
export function isReplayFileName(name: string): boolean {
  return FILE_PATTERN.test(name);
}

/** NDJSON text of frames; `_sig` is stripped (it depends on the stream key and is recomputed on XADD). */
export function encodeReplayLines(frames: readonly Fields[]): string {
  let text = "";
  for (const frame of frames) {
    const { [SIGNATURE_FIELD]: _ignored, ...rest } = frame;
    text += `${JSON.stringify(rest)}\n`;
  }
  return text;
}

export class ReplayFileFormatError extends Error {
  readonly code = "REPLAY_FILE_INVALID";
  readonly permanent = true;
}

/** Parses NDJSON text into frames. Empty lines are skipped; a line that is not an object of strings throws. */
export function decodeReplayLines(text: string, file = "(text)"): Fields[] {
  const frames: Fields[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch (cause) {
      throw new ReplayFileFormatError(`${file}:${i + 1}: not JSON`, { cause });
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ReplayFileFormatError(`${file}:${i + 1}: not a JSON object`);
    }
    const fields: Fields = {};
    for (const [k, v] of Object.entries(parsed)) {
      if (typeof v !== "string") throw new ReplayFileFormatError(`${file}:${i + 1}: field ${k} is not a string`);
      if (k !== SIGNATURE_FIELD) fields[k] = v;
    }
    frames.push(fields);
  }
  return frames;
}

async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes frames as one replay file, durably: resolves only once the file and its directory entry are
 * fsynced. Returns the file's path.
 */
export async function writeReplayFile(dir: string, name: string, frames: readonly Fields[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  const handle = await open(tmp, "w", 0o600);
  try {
    try {
      await handle.writeFile(encodeReplayLines(frames), "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    // A failed write (disk full) must not leave half files behind to pile up; the caller retries.
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
  await fsyncDirectory(dir);
  return path;
}

/** Complete replay files in `dir`, oldest first; an absent directory has none. */
export async function listReplayFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  return names.filter(isReplayFileName).sort().map((n) => join(dir, n));
}

export async function readReplayFile(path: string): Promise<Fields[]> {
  return decodeReplayLines(await readFile(path, "utf8"), path);
}

/** Deletes a replayed file (already gone is fine: another reader handled it) and fsyncs the directory. */
export async function removeReplayFile(path: string, dir: string): Promise<void> {
  try {
    await unlink(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  await fsyncDirectory(dir);
}

/** Moves an unreadable file aside (`.invalid`) so it is kept for inspection and no longer replayed. */
export async function quarantineReplayFile(path: string): Promise<string> {
  const target = `${path}.invalid`;
  await rename(path, target);
  return target;
}
