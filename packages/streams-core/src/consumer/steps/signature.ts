/**
 * Origin check of `_sig` (WIRE §3). In rc/stable a missing or wrong `_sig` is rejected
 * (`signature_missing` / `signature_invalid`); in dev such entries are handled and counted as `unverified`.
 * Without a key (dev only) nothing can be checked and every entry passes.
 */
import { rejectsUnsigned } from "../../signing.js";
import type { SignaturePolicy } from "../../signing.js";
import type { Delivery, Outcomes, Step } from "../pipeline.js";
import { passOn } from "../pipeline.js";

export interface SignatureStepOptions {
  /**
   * `reject` (default): every entry must carry a valid `_sig`. `accept`: an entry with no `_sig` passes, a
   * present one must still be valid. For the audit stream, whose upstream frames (`{id,data,sig}`) carry no
   * `_sig` and are authenticated by their own `sig` (WIRE §6).
   */
  missing?: "reject" | "accept";
}

export function verifySignature(signing: SignaturePolicy, options: SignatureStepOptions = {}): Step {
  const signer = signing.signer;
  const strict = rejectsUnsigned(signing);
  const acceptMissing = options.missing === "accept";
  return (next) => async (batch, context) => {
    if (signer === undefined) return next(batch, context);
    const passed: Delivery[] = [];
    const settled: Outcomes = new Map();
    let missing = 0;
    let invalid = 0;
    for (const d of batch) {
      const verdict = signer.verify(context.topic.stream, d.fields);
      if (verdict === "valid" || (verdict === "missing" && acceptMissing)) {
        passed.push(d);
        continue;
      }
      if (strict) {
        settled.set(
          d.id,
          verdict === "missing"
            ? { kind: "reject", reason: "signature_missing", error: "entry has no _sig" }
            : { kind: "reject", reason: "signature_invalid", error: "_sig does not match the entry" },
        );
        continue;
      }
      if (verdict === "missing") missing++;
      else invalid++;
      passed.push(d);
    }
    if (missing > 0) context.metrics.unverified?.("missing", missing);
    if (invalid > 0) context.metrics.unverified?.("invalid", invalid);
    if (missing + invalid > 0) context.logger.warn({ missing, invalid }, "CARACAL_MODE=dev: handled entries with a missing or wrong _sig");
    return passOn(next, passed, settled, context);
  };
}
