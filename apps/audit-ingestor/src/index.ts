export { runVerifyCommand, VERIFY_USAGE } from "./verify/verify-command.js";
export type { CommandIo } from "./verify/verify-command.js";
export { EXPORT_HOUR_USAGE, parseHour, runExportHourCommand } from "./export/export-hour-command.js";
