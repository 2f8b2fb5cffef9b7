/**
 * The OPA bundle service API: `GET /bundles/{zone}.tar.gz` with the revision as a strong ETag;
 * `If-None-Match` equal to it → 304; with `Prefer: wait=N` too, the answer waits until the bundle changes
 * (200 with the new one) or N seconds pass (304), which is OPA's long polling. A long-poll-capable answer
 * carries `Content-Type: application/vnd.openpolicyagent.bundles`, which tells OPA it may long-poll.
 */
import { Hono } from "hono";

import type { BundleStore } from "./store.js";

export const OPA_BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles";

/** `W/"x"`, `"x"` and `x` name the same revision; a list matches when any member does. */
export function etagMatches(header: string | undefined, etag: string): boolean {
  if (header === undefined || header === "") return false;
  const want = etag.replace(/^"|"$/g, "");
  return header.split(",").some((t) => {
    const v = t.trim().replace(/^W\//, "").replace(/^"|"$/g, "");
    return v === "*" || v === want;
  });
}

/** Seconds asked for by `Prefer: wait=N` (RFC 7240), bounded by `maxWaitMs`; 0 without it. */
export function preferWaitMs(header: string | undefined, maxWaitMs: number): number {
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d+)"?/i.exec(header ?? "");
  return m === null ? 0 : Math.min(Number(m[1]) * 1000, maxWaitMs);
}

export function bundleRoutes(options: {
  store: BundleStore;
  maxWaitMs: number;
  /** Builds a zone seen for the first time (an unbound zone gets deny-all; an unknown one nothing). */
  onMissingZone?: (zone: string) => Promise<void>;
}): Hono {
  const { store, maxWaitMs } = options;
  const app = new Hono();
  app.get("/bundles/:file", async (c) => {
    const file = c.req.param("file");
    if (!file.endsWith(".tar.gz")) return c.text("not found", 404);
    const zone = file.slice(0, -".tar.gz".length);
    let bundle = store.get(zone);
    if (bundle === undefined) {
      await options.onMissingZone?.(zone);
      bundle = store.get(zone);
      if (bundle === undefined) return c.text("no bundle for this zone", 404);
    }
    const ifNoneMatch = c.req.header("If-None-Match");
    const longPoll = (c.req.header("Accept") ?? "").includes(OPA_BUNDLE_CONTENT_TYPE) || c.req.header("Prefer") !== undefined;
    const contentType = longPoll ? OPA_BUNDLE_CONTENT_TYPE : "application/gzip";
    if (etagMatches(ifNoneMatch, bundle.etag)) {
      const waitMs = preferWaitMs(c.req.header("Prefer"), maxWaitMs);
      if (waitMs > 0 && (await store.waitForChange(zone, bundle.etag, waitMs, c.req.raw.signal))) bundle = store.get(zone) ?? bundle;
      if (etagMatches(ifNoneMatch, bundle.etag)) {
        return c.body(null, 304, { ETag: bundle.etag, "Content-Type": contentType });
      }
    }
    return c.body(new Uint8Array(bundle.bytes), 200, { ETag: bundle.etag, "Content-Type": contentType, "Cache-Control": "no-cache" });
  });
  return app;
}
