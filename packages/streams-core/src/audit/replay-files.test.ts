import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterEach, describe, expect, it } from "vitest";

import type { Fields } from "../codec.js";
import {
  ReplayFileFormatError,
  decodeReplayLines,
  encodeReplayLines,
  isReplayFileName,
  listReplayFiles,
  readReplayFile,
  removeReplayFile,
  replayFileName,
  writeReplayFile,
} from "./replay-files.js";

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "audit-replay-"));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

describe("replay file names", () => {
  it("sort in publish order: by start time, then batch ordinal", () => {
    const names = [replayFileName(1_700_000_000_123, 42, 10), replayFileName(1_700_000_000_123, 42, 9), replayFileName(999, 7, 1)];
    expect([...names].sort()).toEqual([names[2], names[1], names[0]]);
    expect(names[1]).toBe("audit-1700000000123-42-000009.ndjson");
    for (const n of names) expect(isReplayFileName(n)).toBe(true);
  });

  it("exclude temporary and foreign files", () => {
    expect(isReplayFileName("audit-1700000000123-42-000009.ndjson.ab12cd34.tmp")).toBe(false);
    expect(isReplayFileName("audit-1700000000123-42-000009.ndjson.invalid")).toBe(false);
    expect(isReplayFileName("notes.ndjson")).toBe(false);
  });
});

describe("NDJSON lines", () => {
  it("round-trip frames and drop _sig", () => {
    const frames: Fields[] = [
      { id: "a", data: '{"x":"line\\nbreak"}', sig: "ab", _sig: "cd" },
      { id: "b", data: "{}", outbox_id: "o-1" },
    ];
    const text = encodeReplayLines(frames);
    expect(text.split("\n")).toHaveLength(3);
    expect(decodeReplayLines(text)).toEqual([
      { id: "a", data: '{"x":"line\\nbreak"}', sig: "ab" },
      { id: "b", data: "{}", outbox_id: "o-1" },
    ]);
  });

  it("reject a line that is not an object of strings", () => {
    expect(() => decodeReplayLines('{"id":"a","data":"{}"}\n{"id":1}\n')).toThrow(ReplayFileFormatError);
    expect(() => decodeReplayLines("{not json\n")).toThrow(/:1: not JSON/);
    expect(() => decodeReplayLines("[1]\n")).toThrow(/not a JSON object/);
  });
});

describe("replay files on disk", () => {
  it("are written complete under their final name, listed oldest first, and removed", async () => {
    const dir = await tempDir();
    const later = await writeReplayFile(dir, replayFileName(2000, 1, 1), [{ id: "2", data: "{}" }]);
    const earlier = await writeReplayFile(dir, replayFileName(1000, 1, 1), [{ id: "1", data: "{}" }]);
    await writeFile(join(dir, `${replayFileName(3000, 1, 1)}.deadbeef.tmp`), '{"id":"half');
    expect(await listReplayFiles(dir)).toEqual([earlier, later]);
    expect(await readReplayFile(earlier)).toEqual([{ id: "1", data: "{}" }]);
    expect((await readdir(dir)).filter((n) => n.endsWith(".tmp") && !n.includes("deadbeef"))).toEqual([]);
    await removeReplayFile(earlier, dir);
    await removeReplayFile(earlier, dir); // already gone: fine
    expect(await listReplayFiles(dir)).toEqual([later]);
  });

  it("an absent directory lists no files, and is created on write", async () => {
    const dir = join(await tempDir(), "nested", "replay");
    expect(await listReplayFiles(dir)).toEqual([]);
    await writeReplayFile(dir, replayFileName(1, 1, 1), [{ id: "x", data: "{}" }]);
    expect(await listReplayFiles(dir)).toHaveLength(1);
  });
});
