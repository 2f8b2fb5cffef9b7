/** @caracal/policy-invalidator: OPA bundles of each zone and the bundle service. */
export * from "./bundle.js";
