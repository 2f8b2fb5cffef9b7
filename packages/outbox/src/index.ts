export * from "./errors.js";
export * from "./executor.js";
export * from "./fields.js";
export * from "./enqueue.js";
export * from "./requeue.js";
export * from "./policy-activation.js";
