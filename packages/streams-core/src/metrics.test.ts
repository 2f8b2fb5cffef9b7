import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";

import { createPrometheusConsumerMetrics } from "./metrics.js";

describe("createPrometheusConsumerMetrics", () => {
  it("records every hook under caracal_stream_* with stream and group labels, sharing metrics per registry", async () => {
    const registry = new Registry();
    const a = createPrometheusConsumerMetrics(registry, { stream: "s1", group: "g1" });
    const b = createPrometheusConsumerMetrics(registry, { stream: "s2", group: "g2" });
    a.received!(5);
    a.acked!(3);
    a.deadLettered!("schema_invalid", 2);
    a.reclaimed!(1);
    a.trimmed!(4);
    a.handlerDuration!(0.02);
    a.lag!(7);
    a.pending!(9);
    a.unverified("missing", 2);
    a.discarded("parse_error", 1);
    a.contact(1_700_000_000_000);
    a.deadLetterStream({ length: 12, added: 40, droppedUnread: 28, oldestAgeSeconds: 60 });
    a.deadLetterWriteFailed(3);
    b.acked!(1);
    const text = await registry.metrics();
    expect(text).toContain('caracal_stream_unverified_total{stream="s1",group="g1",result="missing"} 2');
    expect(text).toContain('caracal_stream_discarded_total{stream="s1",group="g1",reason="parse_error"} 1');
    expect(text).toContain('caracal_stream_last_contact_timestamp_seconds{stream="s1",group="g1"} 1700000000');
    expect(text).toContain('caracal_dead_letter_entries{stream="s1",group="g1"} 12');
    expect(text).toContain('caracal_dead_letter_dropped_unread_entries{stream="s1",group="g1"} 28');
    expect(text).toContain('caracal_dead_letter_oldest_age_seconds{stream="s1",group="g1"} 60');
    expect(text).toContain('caracal_dead_letter_write_failures_total{stream="s1",group="g1"} 3');
    expect(text).toContain('caracal_stream_received_total{stream="s1",group="g1"} 5');
    expect(text).toContain('caracal_stream_acked_total{stream="s1",group="g1"} 3');
    expect(text).toContain('caracal_stream_acked_total{stream="s2",group="g2"} 1');
    expect(text).toContain('caracal_stream_dead_lettered_total{stream="s1",group="g1",reason="schema_invalid"} 2');
    expect(text).toContain('caracal_stream_reclaimed_total{stream="s1",group="g1"} 1');
    expect(text).toContain('caracal_stream_trimmed_total{stream="s1",group="g1"} 4');
    expect(text).toContain('caracal_stream_handler_duration_seconds_count{stream="s1",group="g1"} 1');
    expect(text).toContain('caracal_stream_lag_entries{stream="s1",group="g1"} 7');
    expect(text).toContain('caracal_stream_pending_entries{stream="s1",group="g1"} 9');
  });
});
