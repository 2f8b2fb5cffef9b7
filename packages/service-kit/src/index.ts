export * from "./logger.js";
export * from "./config.js";
export * from "./http.js";
export * from "./lifecycle.js";
export * from "./lease.js";
export * from "./secrets.js";
export * from "./service.js";
