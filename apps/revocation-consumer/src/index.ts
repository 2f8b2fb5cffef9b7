export * from "./config.js";
export * from "./app.js";
export * from "./writer.js";
export * from "./reconcile.js";
export * from "./eviction.js";
