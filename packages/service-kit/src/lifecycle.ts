import { ConfigError, describeSignaturePolicy } from "@caracal/streams-core";
import type { SignaturePolicy } from "@caracal/streams-core";
import type { Logger } from "pino";

/**
 * Runs a service until SIGTERM or SIGINT: the first signal aborts `signal` (stop reading, finish in-flight
 * work, ack, close); a second signal, or `forceAfterMs` without completion, exits at once with code 1.
 */
export async function runUntilSignal(
  logger: Logger,
  run: (signal: AbortSignal) => Promise<void>,
  options: { forceAfterMs?: number } = {},
): Promise<void> {
  const controller = new AbortController();
  const forceAfterMs = options.forceAfterMs ?? 30_000;
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      logger.warn({ signal: name }, "second signal: exiting now");
      process.exit(1);
    }
    logger.info({ signal: name }, "stopping");
    controller.abort();
    setTimeout(() => {
      logger.error({ forceAfterMs }, "graceful stop took too long: exiting");
      process.exit(1);
    }, forceAfterMs).unref();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  try {
    await run(controller.signal);
  } catch (error) {
    logger.fatal({ err: error }, "service failed");
    process.exitCode = 1;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}

/**
 * Start-up step of every composition root: loads the configuration once; on a ConfigError logs every
 * problem (never a value) and exits with code 1. Then says at start-up what happens to `_sig` (loudly
 * when messages go unsigned or unverified, WIRE §3).
 */
export function loadConfigOrExit<C extends { signing: SignaturePolicy }>(logger: Logger, load: () => C): C {
  let config: C;
  try {
    config = load();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    logger.fatal({ problems: error.problems }, "invalid configuration");
    process.exit(1);
  }
  const policy = describeSignaturePolicy(config.signing);
  logger[policy.level](policy.message);
  return config;
}
