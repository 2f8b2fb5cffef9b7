import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";

import { createPrometheusAuditPublisherMetrics } from "./metrics.js";

describe("createPrometheusAuditPublisherMetrics", () => {
  it("counts published, spilled and replayed events, and tracks buffer depth and batch time", async () => {
    const registry = new Registry();
    const hooks = createPrometheusAuditPublisherMetrics(registry);
    hooks.published?.(1000);
    hooks.published?.(3);
    hooks.spilled?.(7);
    hooks.replayed?.(7);
    hooks.bufferDepth?.(42);
    hooks.bufferDepth?.(5);
    hooks.batchSent?.(1000, 0.004);
    const text = await registry.metrics();
    expect(text).toMatch(/^caracal_audit_publisher_published_events_total 1003$/m);
    expect(text).toMatch(/^caracal_audit_publisher_spilled_events_total 7$/m);
    expect(text).toMatch(/^caracal_audit_publisher_replayed_events_total 7$/m);
    expect(text).toMatch(/^caracal_audit_publisher_buffer_depth 5$/m);
    expect(text).toMatch(/^caracal_audit_publisher_batch_seconds_bucket\{le="0.005"\} 1$/m);
    expect(text).toMatch(/^caracal_audit_publisher_batch_seconds_bucket\{le="0.001"\} 0$/m);
  });

  it("can be registered twice on different registries (one per publisher in tests)", () => {
    expect(() => {
      createPrometheusAuditPublisherMetrics(new Registry());
      createPrometheusAuditPublisherMetrics(new Registry());
    }).not.toThrow();
  });
});
