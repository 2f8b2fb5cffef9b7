-- EXPLAIN checks of the ledger's queries on a large audit_events (docs/audit-ledger.md).
-- Run on the database kept by `BENCH_KEEP_DATABASE=1 pnpm bench:audit` (1M rows after the backlog run):
--   psql "$DATABASE_URL" -f apps/audit-ingestor/src/scripts/explain-ledger.sql
ANALYZE audit_events;
\echo '--- writer: zone head (per zone, under its lock)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT z.zone_id, h.chain_seq, h.hmac_chain FROM unnest(ARRAY['zone-1','zone-2']) AS z(zone_id)
LEFT JOIN LATERAL (SELECT chain_seq, hmac_chain FROM audit_events e WHERE e.zone_id = z.zone_id ORDER BY chain_seq DESC LIMIT 1) h ON true;
\echo '--- writer: duplicate check by id'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, content_sha256 FROM audit_events WHERE id = ANY((SELECT array_agg(id) FROM (SELECT id FROM audit_events ORDER BY random() LIMIT 100) s));
\echo '--- writer: producer-chain neighbours'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT e.id FROM (SELECT DISTINCT producer_id, zone_id, producer_seq FROM audit_events WHERE chain_seq > 60000 AND zone_id = 'zone-3' LIMIT 100) q
JOIN LATERAL (SELECT id FROM audit_events x WHERE x.producer_id = q.producer_id AND x.zone_id = q.zone_id AND x.producer_seq = q.producer_seq) e ON true;
\echo '--- sweeper: zones and first chain_seq of the window'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT zone_id, min(chain_seq) FROM audit_events WHERE occurred_at >= now() - interval '4 hours' GROUP BY zone_id;
\echo '--- sweeper / verify: a page of a zone in chain order'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM audit_events WHERE zone_id = 'zone-3' AND chain_seq > 30000 AND chain_seq <= 9007199254740991 ORDER BY chain_seq LIMIT 5000;
\echo '--- verify --from/--to: time range to chain_seq range'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT min(chain_seq), max(chain_seq) FROM audit_events WHERE zone_id = 'zone-3' AND occurred_at >= now() - interval '1 hour';
\echo '--- seed query: a zone over a time range'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM audit_events WHERE zone_id = 'zone-3' AND occurred_at >= now() - interval '2 hours' AND occurred_at < now() - interval '1 hour' ORDER BY occurred_at LIMIT 100;
\echo '--- export: one hour of occurred_at'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM audit_events WHERE occurred_at >= date_trunc('hour', now()) - interval '2 hours' AND occurred_at < date_trunc('hour', now()) - interval '1 hour';
\echo '--- retention: a batch of old rows'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM audit_events WHERE occurred_at < now() - interval '30 minutes' ORDER BY occurred_at LIMIT 500;
