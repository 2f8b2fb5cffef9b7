-- Upstream's second outbox, written by its Coordinator (and API): created only where missing, with
-- upstream's shape, keys and indexes; an upstream table keeps every row. The dispatcher drains it too
-- (apps/outbox-dispatcher, src/coordinator-outbox.ts) and adds only `last_error` for operators.
CREATE TABLE IF NOT EXISTS caracal_outbox (
  id text NOT NULL CONSTRAINT caracal_outbox_pkey PRIMARY KEY,
  producer text NOT NULL CONSTRAINT caracal_outbox_producer_check CHECK (producer = ANY (ARRAY['api'::text, 'coordinator'::text])),
  topic text NOT NULL,
  dedupe_key text NOT NULL,
  payload_json jsonb NOT NULL,
  status text DEFAULT 'pending'::text NOT NULL CONSTRAINT caracal_outbox_status_check CHECK (status = ANY (ARRAY['pending'::text, 'published'::text, 'dead'::text])),
  attempts integer DEFAULT 0 NOT NULL,
  available_at timestamp with time zone DEFAULT now() NOT NULL,
  published_at timestamp with time zone,
  created_at timestamp with time zone DEFAULT now() NOT NULL,
  updated_at timestamp with time zone DEFAULT now() NOT NULL,
  CONSTRAINT caracal_outbox_producer_topic_dedupe_key_key UNIQUE (producer, topic, dedupe_key)
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS caracal_outbox_status_available_at_idx ON caracal_outbox USING btree (status, available_at);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS caracal_outbox_topic_status_idx ON caracal_outbox USING btree (topic, status);
--> statement-breakpoint
ALTER TABLE caracal_outbox ADD COLUMN IF NOT EXISTS last_error text;
--> statement-breakpoint
-- the drain's read: pending rows in creation order (upstream orders by created_at)
CREATE INDEX IF NOT EXISTS caracal_outbox_pending_order_idx ON caracal_outbox USING btree (created_at, id) WHERE status = 'pending';
