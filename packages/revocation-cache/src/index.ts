export * from "./anchors.js";
export * from "./errors.js";
export * from "./seed.js";
export * from "./cache.js";
export * from "./http.js";
