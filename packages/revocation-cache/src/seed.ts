import type pg from "pg";
import { to as copyTo } from "pg-copy-streams";

/**
 * Streams every active revocation (`expires_at > now()`) out of `session_revocations` with COPY TO, so
 * neither PostgreSQL nor Node holds the result set: `onRow(anchorId, expiresAtMs)` is called per row.
 * Resolves to the number of rows. Anchor ids are written by COPY's text format; a backslash is unescaped.
 */
export async function streamActiveRevocations(
  pool: pg.Pool,
  onRow: (anchorId: string, expiresAtMs: number) => void,
): Promise<number> {
  const client = await pool.connect();
  let rows = 0;
  try {
    const stream = client.query(
      copyTo(
        "COPY (SELECT anchor_id, floor(extract(epoch FROM expires_at) * 1000)::bigint FROM session_revocations WHERE expires_at > now()) TO STDOUT",
      ),
    );
    let rest = "";
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const text = rest + chunk.toString("utf8");
      let start = 0;
      for (let nl = text.indexOf("\n", start); nl >= 0; nl = text.indexOf("\n", start)) {
        const tab = text.lastIndexOf("\t", nl);
        let id = text.slice(start, tab);
        if (id.includes("\\")) id = unescapeCopyText(id);
        onRow(id, Number(text.slice(tab + 1, nl)));
        rows++;
        start = nl + 1;
      }
      rest = text.slice(start);
    }
  } finally {
    client.release();
  }
  return rows;
}

function unescapeCopyText(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => ({ t: "\t", n: "\n", r: "\r", b: "\b", f: "\f", v: "\v" })[c] ?? c);
}
