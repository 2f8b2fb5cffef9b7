export * from "./outbox.js";
export * from "./audit.js";
export * from "./audit-anchors.js";
export * from "./policy.js";
export * from "./revocation.js";
export * from "./observers.js";
