/* global performance, process, console */
// One-off comparison behind docs/decisions.md "Parquet writer: hyparquet-writer": writes the same N
// audit-like rows (9 columns, SNAPPY on both sides since parquetjs-lite has no ZSTD, row groups of
// 10,000) with parquetjs-lite 0.8.7 and hyparquet-writer 0.17.0, best of 3. parquetjs-lite is not a
// dependency of this project; run it in a scratch directory:
//   mkdir /tmp/pq && cd /tmp/pq && npm init -y && npm install parquetjs-lite@0.8.7 hyparquet-writer@0.17.0
//   cp <this file> bench.mjs && N=100000 node bench.mjs
import { writeFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { parquetWriteBuffer } from "hyparquet-writer";
const require = createRequire(import.meta.url);
const parquet = require("parquetjs-lite");
const N = Number(process.env.N ?? 100000);
const rows = [];
for (let i = 0; i < N; i++) rows.push({
  id: `ev-${i}-${Math.random().toString(16).slice(2)}`, zone_id: `zone-${i % 10}`, event_type: "token.exchange", decision: i % 5 ? "allow" : "deny",
  payload_json: JSON.stringify({ n: i, trace: Math.random().toString(16), nested: [1, "x", null] }),
  hmac_chain: Math.random().toString(16).repeat(4).slice(0, 64), chain_seq: BigInt(i + 1), occurred_at: new Date(1772323200000 + i * 10), tamper_detected: i % 7 === 0,
});
async function lite() {
  const schema = new parquet.ParquetSchema({
    id: { type: "UTF8", compression: "SNAPPY" }, zone_id: { type: "UTF8", compression: "SNAPPY" }, event_type: { type: "UTF8", compression: "SNAPPY" },
    decision: { type: "UTF8", compression: "SNAPPY" }, payload_json: { type: "UTF8", compression: "SNAPPY" }, hmac_chain: { type: "UTF8", compression: "SNAPPY" },
    chain_seq: { type: "INT64", compression: "SNAPPY" }, occurred_at: { type: "TIMESTAMP_MILLIS", compression: "SNAPPY" }, tamper_detected: { type: "BOOLEAN", compression: "SNAPPY" },
  });
  const w = await parquet.ParquetWriter.openFile(schema, "./lite.parquet", { rowGroupSize: 10000 });
  for (const r of rows) await w.appendRow({ ...r, chain_seq: Number(r.chain_seq) });
  await w.close();
}
function hyp() {
  const col = (name, type) => ({ name, type, data: rows.map((r) => r[name]) });
  const buf = parquetWriteBuffer({ codec: "SNAPPY", rowGroupSize: 10000, columnData: [
    col("id", "STRING"), col("zone_id", "STRING"), col("event_type", "STRING"), col("decision", "STRING"), col("payload_json", "STRING"),
    col("hmac_chain", "STRING"), col("chain_seq", "INT64"), col("occurred_at", "TIMESTAMP"), col("tamper_detected", "BOOLEAN")] });
  writeFileSync("./hyp.parquet", new Uint8Array(buf));
}
const best = async (f) => { let b = Infinity; for (let k = 0; k < 3; k++) { const t = performance.now(); await f(); b = Math.min(b, performance.now() - t); } return b; };
const tl = await best(lite); const th = await best(hyp);
console.log(JSON.stringify({ rows: N, parquetjs_lite_ms: Math.round(tl), hyparquet_writer_ms: Math.round(th), ratio: +(tl / th).toFixed(2),
  lite_bytes: statSync("./lite.parquet").size, hyp_bytes: statSync("./hyp.parquet").size }));
