/**
 * `caracal-streams`: the operator CLI. `runCli(argv, env, io, signal)` runs one command and resolves to its
 * exit status (`exit-codes.ts`); `main.ts` binds it to the process. Commands, flags and exit codes are
 * documented in the app README and by `--help` on every level.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";

import { auditExport, auditSearch, auditVerify } from "./commands/audit.js";
import { policyStatus, replicaUrls } from "./commands/policy.js";
import { CHECK_ANCHORS, revocationsCheck, revocationsList } from "./commands/revocations.js";
import type { CheckAnchor } from "./commands/revocations.js";
import { dlqList, dlqPurge, dlqReplay, dlqShow } from "./commands/dlq.js";
import { keysGenerate } from "./commands/keys.js";
import { outboxRequeue, outboxStatus } from "./commands/outbox.js";
import { streamsCommand } from "./commands/streams.js";
import type { Env } from "./config.js";
import { Connections } from "./config.js";
import { CliError, ExitCode } from "./exit-codes.js";
import type { Io } from "./output.js";

export { ExitCode, CliError } from "./exit-codes.js";
export type { Io } from "./output.js";

function positiveInt(name: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number >= 1`);
    return n;
  };
}

function positiveNumber(name: string) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a number > 0`);
    return n;
  };
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Connection failures (refused, timeouts, authentication) are exit 4; anything else propagates. */
function isUnavailable(error: unknown): boolean {
  const text = error instanceof Error ? `${error.name} ${error.message} ${(error as { code?: string }).code ?? ""}` : String(error);
  return /ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|Connection is closed|max retries|timeout|connect|NOAUTH|WRONGPASS|password authentication|ECONNRESET/i.test(text);
}

export async function runCli(argv: readonly string[], env: Env, io: Io, signal: AbortSignal): Promise<number> {
  const conn = new Connections(env);
  let status: number = ExitCode.ok;
  const program = new Command("caracal-streams")
    .description("Operate Caracal's event streams: stream and group state, dead letters, the outbox, the audit ledger, revocations, policy bundles, keys.")
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, "")), writeErr: (s) => io.err(s.replace(/\n$/, "")) })
    .exitOverride()
    .showHelpAfterError("(add --help for usage)")
    .addHelpText(
      "after",
      "\nEnvironment: REDIS_URL, DATABASE_URL, CARACAL_KEY_PREFIX, CARACAL_MODE, STREAMS_HMAC_KEY, AUDIT_HMAC_KEY (as the services read them).\nExit status: 0 ok, 1 problem found, 2 usage, 3 configuration, 4 service unavailable, 5 cancelled.",
    );

  program
    .command("streams")
    .description("per stream and group: length, lag, pending, oldest pending age, consumers and their idle time, dead-letter length")
    .option("--json", "print JSON")
    .option("-w, --watch", "refresh in place until Ctrl-C")
    .addOption(new Option("--interval <seconds>", "refresh interval with --watch").default(2).argParser(positiveNumber("--interval")))
    .action(async (o: { json?: boolean; watch?: boolean; interval: number }) => {
      await streamsCommand(conn, io, { ...o, intervalMs: o.interval * 1000 }, signal);
    });

  const dlq = program.command("dlq").description("dead letters of a stream (give the source stream or its dead-letter stream)");
  dlq
    .command("list <stream>")
    .description("list dead letters, oldest first")
    .addOption(new Option("--limit <n>", "at most n letters").default(20).argParser(positiveInt("--limit")))
    .option("--reason <reason>", "only letters with this reason (signature_invalid, schema_invalid, ...)")
    .option("--json", "print JSON")
    .action(async (stream: string, o: { limit: number; reason?: string; json?: boolean }) => dlqList(conn, io, stream, o));
  dlq
    .command("show <stream> <id>")
    .description("one dead letter with its original fields")
    .option("--json", "print JSON")
    .action(async (stream: string, id: string, o: { json?: boolean }) => dlqShow(conn, io, stream, id, o));
  dlq
    .command("replay <stream>")
    .description("re-publish dead letters to their source stream, re-signed, once each, rate-limited")
    .option("--id <id>", "a letter to replay (repeatable); default: the oldest --limit letters", collect)
    .option("--reason <reason>", "only letters with this reason")
    .addOption(new Option("--limit <n>", "at most n letters").default(100).argParser(positiveInt("--limit")))
    .addOption(new Option("--rate <perSecond>", "letters per second at most").default(50).argParser(positiveNumber("--rate")))
    .option("--dry-run", "say what would be replayed; publish nothing")
    .option("--json", "print JSON")
    .action(async (stream: string, o: { id?: string[]; reason?: string; limit: number; rate: number; dryRun?: boolean; json?: boolean }) => {
      const summary = await dlqReplay(conn, io, stream, { ...o, ...(o.id ? { ids: o.id } : {}) }, signal);
      if (summary.failed.length > 0) status = ExitCode.problemFound;
    });
  dlq
    .command("purge <stream>")
    .description("delete dead letters (asks for confirmation unless --yes)")
    .option("--id <id>", "a letter to delete (repeatable)", collect)
    .option("--all", "delete every letter of the stream")
    .option("-y, --yes", "do not ask for confirmation")
    .action(async (stream: string, o: { id?: string[]; all?: boolean; yes?: boolean }) => {
      await dlqPurge(conn, io, stream, { ...o, ...(o.id ? { ids: o.id } : {}) });
    });

  const outbox = program.command("outbox").description("the transactional outbox (event_outbox)");
  outbox
    .command("status")
    .description("pending, retrying and failed rows, and the oldest ones, per stream")
    .option("--json", "print JSON")
    .action(async (o: { json?: boolean }) => outboxStatus(conn, io, o));
  outbox
    .command("requeue")
    .description("put failed rows back in line, by id, stream or age")
    .option("--id <id>", "a failed row (repeatable)", collect)
    .option("--stream <stream>", "failed rows of this stream")
    .option("--older-than <age>", "rows that failed more than this long ago (90s, 15m, 2h, 7d); with --stream, of that stream")
    .option("--all-failed", "every failed row")
    .option("--json", "print JSON")
    .action(async (o: { id?: string[]; stream?: string; olderThan?: string; allFailed?: boolean; json?: boolean }) => {
      await outboxRequeue(conn, io, { ...o, ...(o.id ? { ids: o.id } : {}) });
    });

  const audit = program.command("audit").description("the audit ledger (audit_events)");
  audit
    .command("verify")
    .description("verify a zone's hash chain from the database alone (exit 0 intact, 1 broken)")
    .requiredOption("--zone <zone>", "zone id")
    .option("--from <time>", "first occurred_at (RFC 3339)")
    .option("--to <time>", "last occurred_at (RFC 3339)")
    .action(async (o: { zone: string; from?: string; to?: string }) => {
      status = await auditVerify(env, io, o);
    });
  audit
    .command("export")
    .description("re-export one UTC hour to S3 at upstream's key layout (a missing object, or a copy beside an existing one); needs AUDIT_EXPORT_S3_*")
    .requiredOption("--hour <hour>", "the UTC hour, e.g. 2026-05-21T12 (or any RFC 3339 time within it)")
    .option("--json", "print JSON")
    .action(async (o: { hour: string; json?: boolean }) => {
      status = await auditExport(env, io, o);
    });
  audit
    .command("search")
    .description("events of a zone by time, type and decision, newest first")
    .requiredOption("--zone <zone>", "zone id")
    .option("--from <time>", "occurred_at from (RFC 3339)")
    .option("--to <time>", "occurred_at before (RFC 3339)")
    .option("--type <eventType>", "event type")
    .option("--decision <decision>", "decision (allow, deny, pending, ...)")
    .addOption(new Option("--limit <n>", "rows per page (1-1000)").default(50).argParser(positiveInt("--limit")))
    .option("--cursor <chainSeq>", "next page: rows before this chain_seq")
    .option("--json", "print JSON")
    .action(async (o: { zone: string; from?: string; to?: string; type?: string; decision?: string; limit: number; cursor?: string; json?: boolean }) => {
      await auditSearch(conn, io, o);
    });

  const revocations = program.command("revocations").description("session revocations (the revocation consumer's session_revocations and upstream's Redis keys)");
  revocations
    .command("list")
    .description("active revocations, newest first")
    .option("--zone <zone>", "one zone")
    .option("--all", "expired ones too")
    .addOption(new Option("--limit <n>", "at most n rows").default(50).argParser(positiveInt("--limit")))
    .option("--json", "print JSON")
    .action(async (o: { zone?: string; all?: boolean; limit: number; json?: boolean }) => {
      await revocationsList(conn, io, o);
    });
  const check = revocations
    .command("check")
    .description("is a mandate with these anchors revoked? (the table and the Redis key upstream readers use; exit 1 when revoked)")
    .requiredOption("--zone <zone>", "zone id");
  for (const anchor of CHECK_ANCHORS) check.option(`--${anchor.replaceAll("_", "-")} <id>`, anchor);
  check.option("--json", "print JSON").action(async (o: Record<string, string | boolean | undefined>) => {
    const anchors: Partial<Record<CheckAnchor, string>> = {};
    for (const anchor of CHECK_ANCHORS) {
      const v = o[anchor.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())];
      if (typeof v === "string") anchors[anchor] = v;
    }
    const checks = await revocationsCheck(conn, io, { zone: String(o.zone), anchors, json: o.json === true });
    if (checks.some((c) => c.revoked)) status = ExitCode.problemFound;
  });

  program
    .command("policy")
    .description("policy bundles")
    .command("status")
    .description("per zone: the active version in PostgreSQL and the revision each policy-invalidator replica serves, and whether they agree (exit 1 if not)")
    .option("--zone <zone>", "one zone")
    .option("--replica <url>", "a policy-invalidator replica, e.g. http://10.0.0.7:9094 (repeatable; default POLICY_INVALIDATOR_URLS)", collect)
    .option("--json", "print JSON")
    .action(async (o: { zone?: string; replica?: string[]; json?: boolean }) => {
      const result = await policyStatus(conn, io, { ...(o.zone !== undefined ? { zone: o.zone } : {}), replicas: replicaUrls(env, o.replica), json: o.json === true });
      if (result.problems.length > 0) status = ExitCode.problemFound;
    });

  const keys = program.command("keys").description("HMAC keys");
  keys
    .command("generate")
    .description("a new hex HMAC key for STREAMS_HMAC_KEY or AUDIT_HMAC_KEY")
    .addOption(new Option("--bytes <n>", "key length in bytes (>= 32)").default(32).argParser(positiveInt("--bytes")))
    .option("--json", "print JSON")
    .action((o: { bytes: number; json?: boolean }) => keysGenerate(io, o));

  try {
    await program.parseAsync([...argv], { from: "user" });
    return status;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end through here too, with exit code 0.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (error instanceof CliError) {
      io.err(`caracal-streams: ${error.message}`);
      return error.exitCode;
    }
    if ((error as { code?: string }).code === "42P01") {
      io.err(`caracal-streams: the database has no Caracal tables: run \`pnpm db:migrate\` (${error instanceof Error ? error.message : String(error)})`);
      return ExitCode.unavailable;
    }
    if (isUnavailable(error)) {
      io.err(`caracal-streams: service unavailable: ${error instanceof Error ? error.message : String(error)}`);
      return ExitCode.unavailable;
    }
    io.err(`caracal-streams: ${error instanceof Error ? error.message : String(error)}`);
    return ExitCode.unavailable;
  } finally {
    await conn.close();
  }
}
