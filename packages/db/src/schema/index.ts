export * from "./outbox.js";
export * from "./audit.js";
