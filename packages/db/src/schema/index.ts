export * from "./outbox.js";
export * from "./audit.js";
export * from "./audit-anchors.js";
export * from "./observers.js";
