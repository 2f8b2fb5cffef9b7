import { ConfigError, describeSignaturePolicy } from "@caracal/streams-core";
import type { SignaturePolicy } from "@caracal/streams-core";
import type { Logger } from "pino";

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
