export * from "./app.js";
export * from "./config.js";
export * from "./dead-letters.js";
export * from "./state.js";
