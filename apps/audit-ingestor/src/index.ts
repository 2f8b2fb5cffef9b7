export { runVerifyCommand, VERIFY_USAGE } from "./verify/verify-command.js";
export type { CommandIo } from "./verify/verify-command.js";
