/**
 * HMAC-SHA256 as hex, for every signature on the hot paths (`_sig`, `_sig2`, the audit frame's `sig`,
 * the ledger's `hmac_chain`). Two equivalent implementations, chosen once per process by a short timing
 * at load: Node's `createHmac`, and RFC 2104 written over the one-shot `crypto.hash` with the key's
 * inner and outer pads computed once per key. Which one is faster depends on the runtime: on Node 24
 * creating an `Hmac` object costs several times what it costs on Node 22, while the one-shot hash is
 * fast on both (docs/decisions.md "HMAC on Node 24"). Both give the same digest; a test checks it.
 */
import { createHmac, hash } from "node:crypto";

const BLOCK = 64;

interface Pads {
  readonly inner: Buffer;
  readonly outer: Buffer;
}

const padsByKey = new WeakMap<Buffer, Pads>();

function padsOf(key: Buffer): Pads {
  let pads = padsByKey.get(key);
  if (pads === undefined) {
    // RFC 2104: a key longer than the block is hashed first; a shorter one is zero-padded
    const k = key.length > BLOCK ? hash("sha256", key, "buffer") : key;
    const inner = Buffer.alloc(BLOCK, 0x36);
    const outer = Buffer.alloc(BLOCK, 0x5c);
    for (let i = 0; i < k.length; i++) {
      inner[i] = (k[i] as number) ^ 0x36;
      outer[i] = (k[i] as number) ^ 0x5c;
    }
    pads = { inner, outer };
    padsByKey.set(key, pads);
  }
  return pads;
}

/** RFC 2104 over the one-shot hash. */
export function hmacSha256HexOneShot(key: Buffer, text: string): string {
  const { inner, outer } = padsOf(key);
  const message = Buffer.from(text, "utf8");
  const innerDigest = hash("sha256", Buffer.concat([inner, message], BLOCK + message.length), "buffer");
  return hash("sha256", Buffer.concat([outer, innerDigest], BLOCK + innerDigest.length), "hex");
}

/** Node's `createHmac`. */
export function hmacSha256HexNative(key: Buffer, text: string): string {
  return createHmac("sha256", key).update(text, "utf8").digest("hex");
}

function timeOf(f: (key: Buffer, text: string) => string): number {
  const key = Buffer.alloc(32, 1);
  const text = "caracal.sessions.revoke\nreason=logout\nsession_id=00000000-0000-0000-0000-000000000000\nzone_id=zone-1\n";
  const started = performance.now();
  for (let i = 0; i < 400; i++) f(key, text);
  return performance.now() - started;
}

function choose(): (key: Buffer, text: string) => string {
  // warm both, then time both
  timeOf(hmacSha256HexNative);
  timeOf(hmacSha256HexOneShot);
  return timeOf(hmacSha256HexOneShot) < timeOf(hmacSha256HexNative) ? hmacSha256HexOneShot : hmacSha256HexNative;
}

/** HMAC-SHA256(key, UTF-8 of `text`) as lowercase hex, by whichever implementation is faster here. */
export const hmacSha256Hex: (key: Buffer, text: string) => string = choose();
