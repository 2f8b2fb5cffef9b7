/** Entry point of `node apps/audit-ingestor/dist/verify.js --zone <zone> [--from <time>] [--to <time>]`. */
import { runVerifyCommand } from "./verify/verify-command.js";

try {
  process.exitCode = await runVerifyCommand(process.argv.slice(2), process.env, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  });
} catch (error) {
  process.stderr.write(`verify failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 2;
}
