import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { createTestRedis, hasRedis } from "@caracal/testkit";
import { afterEach, describe, expect, it } from "vitest";

import { decodeFieldList } from "../codec.js";
import type { Fields } from "../codec.js";
import { Topics, streamKey } from "../registry.js";
import { freePort } from "../test-support/audit-helpers.js";
import { verifyAuditFrame } from "./frame.js";
import { listReplayFiles, readReplayFile } from "./replay-files.js";

const here = dirname(fileURLToPath(import.meta.url));
const childScript = join(here, "..", "test-support", "audit-publisher-child.mjs");
const builtIndex = join(here, "..", "..", "dist", "index.js");
const auditKey = randomBytes(32);
const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** Runs the child until it has buffered `count` events, SIGTERMs it and waits for its exit code. */
async function runAndTerminate(env: Record<string, string>, count: number): Promise<number | null> {
  const child = spawn(process.execPath, [childScript], {
    env: { ...process.env, ...env, AUDIT_HMAC_KEY: auditKey.toString("hex"), AUDIT_CHILD_COUNT: String(count) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  cleanups.push(async () => child.kill("SIGKILL"));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      if (chunk.toString().includes("ready")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`child exited early with ${code}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  return exited;
}

// The child runs the built package: `pnpm turbo run build --filter=@caracal/streams-core` first (turbo's
// test task depends on build).
describe.skipIf(!hasRedis() || !existsSync(builtIndex))("AuditPublisher in a SIGTERMed process", () => {
  it("flushes every buffered event to the stream before exiting", async () => {
    const r = await createTestRedis("audit-sigterm");
    cleanups.push(() => r.close());
    const dir = await mkdtemp(join(tmpdir(), "audit-sigterm-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const idPrefix = randomBytes(4).toString("hex");
    const code = await runAndTerminate({ REDIS_URL: r.url, KEY_PREFIX: r.keyPrefix, AUDIT_REPLAY_DIR: dir, ID_PREFIX: idPrefix }, 2500);
    expect(code).toBe(0);
    const raw = await r.client.xrange(streamKey(Topics.auditEvents.stream, r.keyPrefix), "-", "+");
    const ids = raw.map(([, list]) => verifyAuditFrame(decodeFieldList(list) as Fields, auditKey).event.id);
    expect(ids).toEqual(Array.from({ length: 2500 }, (_, i) => `${idPrefix}-${i}`));
    expect(await listReplayFiles(dir)).toEqual([]);
  });

  it("with Redis unreachable, leaves every buffered event in fsynced replay files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "audit-sigterm-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const port = await freePort();
    const idPrefix = randomBytes(4).toString("hex");
    const code = await runAndTerminate({ REDIS_URL: `redis://127.0.0.1:${port}`, AUDIT_REPLAY_DIR: dir, ID_PREFIX: idPrefix }, 1200);
    expect(code).toBe(0);
    const frames = (await Promise.all((await listReplayFiles(dir)).map(readReplayFile))).flat();
    expect(frames.map((f) => verifyAuditFrame(f, auditKey).event.id)).toEqual(Array.from({ length: 1200 }, (_, i) => `${idPrefix}-${i}`));
  });
});
