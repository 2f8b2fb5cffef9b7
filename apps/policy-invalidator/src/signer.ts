import { importPKCS8 } from "jose";

import type { BundleSigner } from "./bundle.js";
import type { PolicyConfig } from "./config.js";

/** The bundle signer of the settings, its key imported once; undefined when bundles go unsigned. */
export async function bundleSignerOf(config: Pick<PolicyConfig, "bundleSigning">): Promise<BundleSigner | undefined> {
  const s = config.bundleSigning;
  if (s === undefined) return undefined;
  const key = s.alg.startsWith("HS") ? new TextEncoder().encode(s.key) : await importPKCS8(s.key, s.alg);
  return { alg: s.alg, keyId: s.keyId, scope: s.scope, key };
}
