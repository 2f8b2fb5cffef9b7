CREATE TABLE "audit_chain_anchors" (
	"zone_id" text PRIMARY KEY NOT NULL,
	"chain_seq" bigint NOT NULL,
	"hmac_chain" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
