CREATE TABLE "observed_agent_session_events" (
	"zone_id" text NOT NULL,
	"agent_session_id" text NOT NULL,
	"event" text NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"stream_id" text NOT NULL,
	"fields" jsonb NOT NULL,
	CONSTRAINT "observed_agent_session_events_zone_id_agent_session_id_stream_id_pk" PRIMARY KEY("zone_id","agent_session_id","stream_id")
);
--> statement-breakpoint
CREATE TABLE "observed_agent_sessions" (
	"zone_id" text NOT NULL,
	"agent_session_id" text NOT NULL,
	"status" text NOT NULL,
	"occurred_at" timestamp with time zone NOT NULL,
	"stream_id" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "observed_agent_sessions_zone_id_agent_session_id_pk" PRIMARY KEY("zone_id","agent_session_id")
);
--> statement-breakpoint
CREATE TABLE "observed_dedupe" (
	"stream" text NOT NULL,
	"key" text NOT NULL,
	"seen_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "observed_dedupe_stream_key_pk" PRIMARY KEY("stream","key")
);
--> statement-breakpoint
CREATE TABLE "observed_delegation_epochs" (
	"zone_id" text PRIMARY KEY NOT NULL,
	"epoch" bigint NOT NULL,
	"last_event" text NOT NULL,
	"stream_id" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "observed_events" (
	"seq" bigserial PRIMARY KEY NOT NULL,
	"stream" text NOT NULL,
	"zone_id" text,
	"stream_id" text NOT NULL,
	"event" text,
	"fields" jsonb NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "observed_invocations" (
	"zone_id" text NOT NULL,
	"invocation_id" text NOT NULL,
	"service_id" text,
	"state" text NOT NULL,
	"last_event" text NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"last_at" timestamp with time zone NOT NULL,
	"finished_at" timestamp with time zone,
	"duration_ms" bigint,
	CONSTRAINT "observed_invocations_zone_id_invocation_id_pk" PRIMARY KEY("zone_id","invocation_id")
);
--> statement-breakpoint
CREATE INDEX "observed_dedupe_seen_idx" ON "observed_dedupe" USING btree ("seen_at");--> statement-breakpoint
CREATE INDEX "observed_events_stream_idx" ON "observed_events" USING btree ("stream","seq");--> statement-breakpoint
CREATE INDEX "observed_events_zone_idx" ON "observed_events" USING btree ("stream","zone_id","seq");--> statement-breakpoint
CREATE INDEX "observed_invocations_state_idx" ON "observed_invocations" USING btree ("zone_id","state");