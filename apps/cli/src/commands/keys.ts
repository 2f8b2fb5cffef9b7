/**
 * `keys generate`: a new HMAC key for STREAMS_HMAC_KEY or AUDIT_HMAC_KEY, as the services parse it:
 * lowercase hex of `--bytes` random bytes (at least 32, WIRE §3), from the operating system's CSPRNG.
 */
import { randomBytes } from "node:crypto";

import { parseHmacKey } from "@caracal/streams-core";

import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../output.js";
import { printJson } from "../output.js";

export const MIN_KEY_BYTES = 32;

export function generateKeyHex(bytes: number): string {
  if (!Number.isInteger(bytes) || bytes < MIN_KEY_BYTES || bytes > 1024) {
    throw new CliError(`--bytes must be a whole number from ${MIN_KEY_BYTES} to 1024`, ExitCode.usage);
  }
  const hex = randomBytes(bytes).toString("hex");
  parseHmacKey(hex, "generated key"); // the services' own parser must accept what this prints
  return hex;
}

export function keysGenerate(io: Io, options: { bytes: number; json?: boolean }): void {
  const key = generateKeyHex(options.bytes);
  if (options.json) printJson(io, { key, bytes: options.bytes });
  else io.out(key);
}
