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
    b.acked!(1);
    const text = await registry.metrics();
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
