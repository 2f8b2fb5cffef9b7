/**
 * `pnpm bench:audit-costs`: CPU cost per event of each step of the ingest path on the Node thread, with no
 * I/O, to show where `bench:audit`'s time goes. Baseline: `JSON.parse` of the same `data`, the least any
 * ingest must do. Environment: BENCH_EVENTS (default 2000 distinct events), BENCH_ROUNDS (default 20).
 */
import { randomBytes } from "node:crypto";

import { StreamSigner, Topics, auditEventSchema, signAuditData, verifyAuditFrame } from "@caracal/streams-core";
import type { BenchMetric } from "@caracal/testkit/bench-report";
import { ratioMetric, reportBench } from "@caracal/testkit/bench-report";

import canonicalize from "canonicalize";

import { verifyEntries } from "../src/ingest/verify.js";
import { canonicalJson, chainLink, contentSha256 } from "../src/ledger/content.js";

const EVENTS = Number(process.env.BENCH_EVENTS ?? 2000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 20));
const auditKey = randomBytes(32);
const signer = new StreamSigner(randomBytes(32));

const frames = Array.from({ length: EVENTS }, (_, i) => {
  const event = {
    id: `evt-${i}-${randomBytes(6).toString("hex")}`,
    zone_id: `zone-${i % 16}`,
    event_type: "token.exchange",
    request_id: `req-${i}`,
    decision: "allow",
    policy_set_id: "ps-1",
    policy_set_version_id: "psv-1",
    manifest_sha: `sha256:${randomBytes(32).toString("hex")}`,
    evaluation_status: "complete",
    determining_policies_json: [{ id: "baseline-resource-scope" }],
    diagnostics_json: [{ code: "scope_allowed" }],
    metadata_json: { resource: "resource://api", trace_id: randomBytes(16).toString("hex"), client: "c-1" },
    occurred_at: new Date().toISOString(),
    chain: { producer: "p-1", seq: i + 1, prev: randomBytes(32).toString("hex") },
  };
  const data = JSON.stringify(event);
  return signer.signFields(Topics.auditEvents.stream, { id: event.id, data, sig: signAuditData(auditKey, data) });
});
const parsed = frames.map((f) => JSON.parse(f.data as string) as unknown);

/** Microseconds per event of `step`, best of ROUNDS passes over every event. */
function cost(step: (i: number) => unknown): number {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < EVENTS; i++) step(i);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1000 / EVENTS);
  }
  return Math.round(best * 100) / 100;
}

const baseline = cost((i) => JSON.parse(frames[i]!.data as string));
const steps: Array<[string, (i: number) => unknown]> = [
  ["_sig verify (canonical bytes + HMAC + compare)", (i) => signer.verify(Topics.auditEvents.stream, frames[i]!)],
  ["frame verify (frame schema + sig HMAC + JSON.parse + event schema)", (i) => verifyAuditFrame(frames[i]!, auditKey)],
  ["event schema alone (zod)", (i) => auditEventSchema.safeParse(parsed[i])],
  ["content_sha256 (RFC 8785 + SHA-256)", (i) => contentSha256(parsed[i])],
  ["RFC 8785 with the canonicalize package (the former path, for comparison)", (i) => canonicalize(parsed[i])],
  ["RFC 8785 alone (canonicalJson)", (i) => canonicalJson(parsed[i])],
  ["hmac_chain link", (i) => chainLink(auditKey, frames[i]!.sig as string, frames[i]!.sig as string)],
];
// the whole verify step as the handler runs it: frame verify + content_sha256 + the row's COPY text
steps.push(["verify step (verifyEntries: frame verify + content_sha256 + COPY text)", (i) => verifyEntries([{ id: "1-1", fields: frames[i]!, redelivered: false }], auditKey)]);
const metrics: BenchMetric[] = steps.map(([name, step]) => ratioMetric(`${name}, µs per event vs JSON.parse of data`, cost(step), baseline, "µs"));
reportBench("audit-costs", metrics, { events: EVENTS, rounds: ROUNDS, jsonParseMicros: baseline });
