export * from "./config.js";
export * from "./backoff.js";
export * from "./sql.js";
export * from "./metrics.js";
export * from "./listener.js";
export * from "./retention.js";
export * from "./dispatcher.js";
