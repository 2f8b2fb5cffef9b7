import { Counter, Gauge, Histogram } from "prom-client";
import type { Registry } from "prom-client";

import type { BundleStore } from "./store.js";

export interface PolicyMetrics {
  builds: Counter;
  buildFailures: Counter<"reason">;
  denyAllFallbacks: Counter;
  dedupedBuilds: Counter;
  unknownZones: Counter;
  revisionInfo: Gauge<"zone" | "revision">;
  buildSeconds: Histogram;
}

export function createPolicyMetrics(registry: Registry, store: BundleStore): PolicyMetrics {
  const registers = [registry];
  new Gauge({
    name: "caracal_policy_long_poll_waiters",
    help: "Bundle long polls waiting for a change",
    registers,
    collect() {
      this.set(store.waiterCount);
    },
  });
  return {
    builds: new Counter({ name: "caracal_policy_bundle_builds_total", help: "Bundles built and installed (deny-all included)", registers }),
    buildFailures: new Counter({ name: "caracal_policy_bundle_build_failures_total", help: "Bundle builds that failed, by reason; the previous bundle (or deny-all) serves", labelNames: ["reason"], registers }),
    denyAllFallbacks: new Counter({ name: "caracal_policy_deny_all_fallbacks_total", help: "Deny-all bundles installed (no binding, or a failed first build)", registers }),
    dedupedBuilds: new Counter({ name: "caracal_policy_bundle_builds_deduped_total", help: "Invalidations for the version already served: nothing built", registers }),
    unknownZones: new Counter({ name: "caracal_policy_unknown_zones_total", help: "Invalidations for a zone that does not exist", registers }),
    revisionInfo: new Gauge({ name: "caracal_policy_bundle_revision_info", help: "The revision each zone serves (value 1)", labelNames: ["zone", "revision"], registers }),
    buildSeconds: new Histogram({ name: "caracal_policy_bundle_build_seconds", help: "Time to load and build one zone's bundle", buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers }),
  };
}
