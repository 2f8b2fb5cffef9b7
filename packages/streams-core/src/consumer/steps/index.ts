/**
 * The processing steps a service composes around its handler, and the default composition.
 */
import type { Fields } from "../../codec.js";
import type { SignaturePolicy } from "../../signing.js";
import type { Step } from "../pipeline.js";
import { deadLetterRejections } from "./dead-letters.js";
import { limitDeliveries } from "./max-deliveries.js";
import { countOutcomes } from "./metrics.js";
import { parseFields, parseTopicSchema } from "./parse.js";
import { verifySignature } from "./signature.js";

export { deadLetterRejections } from "./dead-letters.js";
export { limitDeliveries } from "./max-deliveries.js";
export { countOutcomes } from "./metrics.js";
export { parseFields, parseTopicSchema, schemaParser } from "./parse.js";
export { verifySignature } from "./signature.js";
export type { SignatureStepOptions } from "./signature.js";

export interface DefaultStepsOptions<T = unknown> {
  signing: SignaturePolicy;
  /** Default 5. */
  maxDeliveries?: number;
  /** Default: the topic's zod schema. */
  parse?: (fields: Fields) => T;
}

/**
 * What `StreamConsumer` applies when a service names no steps, outermost first: count outcomes,
 * dead-letter rejections, bound deliveries, check `_sig` strictly (per CARACAL_MODE), parse with the
 * topic's schema.
 */
export function defaultSteps<T = unknown>(options: DefaultStepsOptions<T>): Step[] {
  return [
    countOutcomes(),
    deadLetterRejections(),
    limitDeliveries(options.maxDeliveries ?? 5),
    verifySignature(options.signing),
    options.parse !== undefined ? parseFields(options.parse) : parseTopicSchema(),
  ];
}
