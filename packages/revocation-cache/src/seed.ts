import type pg from "pg";
import { to as copyTo } from "pg-copy-streams";

import { compactKey, compactKeyOfBytes } from "./compact.js";

/**
 * Streams every active revocation (`expires_at > now()`) out of `session_revocations` with COPY TO, so
 * neither PostgreSQL nor Node holds the result set: `onRow(key, expiresAtMs)` is called per row with the
 * anchor id's `compactKey` (./compact.ts). Rows are parsed from the bytes as they arrive (no text of a
 * whole chunk, no string per id for a UUID), so a seed of a million rows leaves little garbage behind.
 * Resolves to the number of rows. An id that COPY's text format escaped (a backslash) is unescaped.
 */
export async function streamActiveRevocations(pool: pg.Pool, onRow: (key: string, expiresAtMs: number) => void): Promise<number> {
  const client = await pool.connect();
  let rows = 0;
  try {
    const stream = client.query(
      copyTo(
        "COPY (SELECT anchor_id, floor(extract(epoch FROM expires_at) * 1000)::bigint FROM session_revocations WHERE expires_at > now()) TO STDOUT",
      ),
    );
    let rest: Buffer | undefined;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const buf = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
      let start = 0;
      let backslash = buf.indexOf(92);
      for (let nl = buf.indexOf(10, start); nl >= 0; nl = buf.indexOf(10, start)) {
        if (backslash >= 0 && backslash < start) backslash = buf.indexOf(92, start);
        const tab = buf.lastIndexOf(9, nl);
        let expiresAtMs = 0;
        for (let i = tab + 1; i < nl; i++) expiresAtMs = expiresAtMs * 10 + (buf[i]! - 48);
        const escaped = backslash >= 0 && backslash < tab;
        onRow(escaped ? compactKey(unescapeCopyText(buf.toString("utf8", start, tab))) : compactKeyOfBytes(buf, start, tab), expiresAtMs);
        rows++;
        start = nl + 1;
      }
      rest = start < buf.length ? Buffer.from(buf.subarray(start)) : undefined;
    }
  } finally {
    client.release();
  }
  return rows;
}

function unescapeCopyText(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => ({ t: "\t", n: "\n", r: "\r", b: "\b", f: "\f", v: "\v" })[c] ?? c);
}
