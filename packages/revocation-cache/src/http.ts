import type { Context, MiddlewareHandler } from "hono";
import { Hono } from "hono";

import { CHECKABLE_ANCHORS, isCheckableAnchor, type AnchorValues } from "./anchors.js";
import type { RevocationCache } from "./cache.js";

/** Seconds a client should wait before retrying after a 503 `revocation_state_unknown`. */
export const UNKNOWN_RETRY_AFTER_SECONDS = 5;

function staleBody(cache: RevocationCache, zone: string) {
  return {
    error: "revocation_state_unknown",
    message: `revocation state is stale: ${cache.staleReason() ?? "stale"}; deny until it recovers`,
    zone,
  };
}

/**
 * The check endpoints, answered from the in-process cache of this replica:
 * - `GET /v1/zones/{zone}/revocations/{anchor}/{id}` -> 200 `{"revoked": bool, zone, anchor, id}`;
 *   400 on an unknown anchor name; 503 `{"error":"revocation_state_unknown",...}` when stale and not revoked.
 * - `POST /v1/zones/{zone}/revocations:check` with `{"anchors": {"session_id": "...", ...}}` ->
 *   200 `{"revoked": bool, "outcome": "revoked"|"active", "revoked_anchors": [...]}`, 503 when unknown.
 */
export function revocationRoutes(cache: RevocationCache): Hono {
  const app = new Hono();
  app.get("/v1/zones/:zone/revocations/:anchor/:id", (c) => {
    const { zone, anchor, id } = c.req.param();
    if (!isCheckableAnchor(anchor)) {
      return c.json({ error: "unknown_anchor", message: `anchor must be one of ${CHECKABLE_ANCHORS.join(", ")}` }, 400);
    }
    const outcome = cache.check(zone, { [anchor]: id });
    if (outcome === "unknown") return unknown(c, cache, zone);
    return c.json({ revoked: outcome === "revoked", zone, anchor, id });
  });
  app.post("/v1/zones/:zone/:op{revocations:check}", async (c) => {
    const zone = c.req.param("zone");
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: "invalid_body", message: "body must be JSON" }, 400);
    }
    const anchors = (body as { anchors?: unknown } | null)?.anchors;
    if (typeof anchors !== "object" || anchors === null || Array.isArray(anchors)) {
      return c.json({ error: "invalid_body", message: 'body must be {"anchors": {"<anchor>": "<id>", ...}}' }, 400);
    }
    const values: AnchorValues = {};
    for (const [name, id] of Object.entries(anchors as Record<string, unknown>)) {
      if (!isCheckableAnchor(name) || (typeof id !== "string" && id !== null)) {
        return c.json({ error: "invalid_body", message: `anchors: keys are ${CHECKABLE_ANCHORS.join(", ")}; values are strings` }, 400);
      }
      values[name] = id;
    }
    const outcome = cache.check(zone, values);
    if (outcome === "unknown") return unknown(c, cache, zone);
    const revokedAnchors = outcome === "revoked" ? Object.entries(values).filter(([, id]) => typeof id === "string" && cache.isRevoked(id)).map(([name]) => name) : [];
    return c.json({ revoked: outcome === "revoked", outcome, zone, revoked_anchors: revokedAnchors });
  });
  return app;
}

function unknown(c: Context, cache: RevocationCache, zone: string) {
  c.header("Retry-After", String(UNKNOWN_RETRY_AFTER_SECONDS));
  return c.json(staleBody(cache, zone), 503);
}

/** Where a request's mandate is: its zone and anchors, or undefined when the request carries none. */
export type MandateAnchorsOf = (c: Context) => { zone: string; anchors: AnchorValues } | undefined | Promise<{ zone: string; anchors: AnchorValues } | undefined>;

/**
 * Hono middleware for a resource server: rejects a request whose mandate is revoked or whose revocation
 * state is unknown, after the mandate itself was verified (run it behind the authentication middleware).
 * - revoked -> 403 `{"error":"mandate_revoked"}`: final; the agent needs a new mandate.
 * - unknown -> 503 `{"error":"revocation_state_unknown"}` with `Retry-After`: the resource server cannot
 *   tell, so it denies (fail closed) and the client retries later.
 * - a request with no mandate (`anchorsOf` returns undefined) -> 401 `{"error":"mandate_required"}`.
 */
export function revocationGuard(cache: RevocationCache, anchorsOf: MandateAnchorsOf): MiddlewareHandler {
  return async (c, next) => {
    const mandate = await anchorsOf(c);
    if (mandate === undefined) return c.json({ error: "mandate_required" }, 401);
    const outcome = cache.check(mandate.zone, mandate.anchors);
    if (outcome === "revoked") return c.json({ error: "mandate_revoked", message: "the mandate's session or delegation was revoked" }, 403);
    if (outcome === "unknown") return unknown(c, cache, mandate.zone);
    await next();
  };
}
