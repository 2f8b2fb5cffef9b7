/**
 * Exit status of every `caracal-streams` command (documented in the app README):
 * 0 success; 1 the check found a problem (a broken ledger, a revoked anchor, a replay that left letters);
 * 2 bad usage (unknown command, bad flag); 3 bad configuration (an environment variable);
 * 4 a service (Redis or PostgreSQL) could not be reached or failed; 5 cancelled at a confirmation prompt.
 */
export const ExitCode = { ok: 0, problemFound: 1, usage: 2, config: 3, unavailable: 4, cancelled: 5 } as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A failure that ends the command with its exit status and one clear line on stderr. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = "CliError";
  }
}
