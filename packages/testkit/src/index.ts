export * from "./fixtures.js";
export * from "./postgres.js";
export * from "./services.js";
export * from "./s3.js";
export * from "./redis-cluster.js";
export * from "./tcp-proxy.js";
