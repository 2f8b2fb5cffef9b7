/**
 * The in-memory form of the cache's entries, chosen for a table of a million anchors:
 * - Key: a lower-case canonical UUID (what upstream issues) becomes "u" + its 16 bytes as one-byte
 *   characters (17 characters, a fresh flat string, instead of a 36-character one, which the seed's COPY
 *   parser would otherwise cut out of, and keep alive, a whole chunk of text); any other id is "r" + the
 *   id, exactly. The two forms never collide, and ids stay compared exactly (case and all), like
 *   upstream's Redis keys.
 * - Expiry: whole seconds after `EPOCH_BASE_S` (rounded up, so an entry errs toward staying revoked by
 *   under a second): a small integer that V8 stores inline, where a millisecond timestamp needs a heap
 *   number per entry.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const codes: number[] = new Array<number>(17).fill(0);

export function compactKey(id: string): string {
  if (id.length !== 36 || !UUID.test(id)) return `r${id}`;
  codes[0] = 117; // "u"
  let j = 1;
  for (let i = 0; i < 36; i += 2) {
    if (id.charCodeAt(i) === 45) i++; // "-" sits only before an even-length group
    codes[j++] = (hex(id.charCodeAt(i)) << 4) | hex(id.charCodeAt(i + 1));
  }
  return String.fromCharCode(...codes);
}

/** The id a compact key was made from. */
export function idOfCompactKey(key: string): string {
  if (key.charCodeAt(0) !== 117) return key.slice(1);
  let h = "";
  for (let i = 1; i < 17; i++) {
    h += key.charCodeAt(i).toString(16).padStart(2, "0");
    if (i === 4 || i === 6 || i === 8 || i === 10) h += "-";
  }
  return h;
}

function hex(c: number): number {
  return c <= 57 ? c - 48 : c - 87;
}

/** Process start, in seconds since the epoch; expiries are kept as seconds after it. */
export const EPOCH_BASE_S = Math.floor(Date.now() / 1000);
const MAX_OFFSET_S = 2 ** 30 - 1;

export function compactExpiry(expiresAtMs: number): number {
  return Math.min(MAX_OFFSET_S, Math.max(-MAX_OFFSET_S, Math.ceil(expiresAtMs / 1000) - EPOCH_BASE_S));
}

/** The compact form of `now`: an entry is live while its compact expiry is greater. */
export function compactNow(nowMs: number): number {
  return Math.floor(nowMs / 1000) - EPOCH_BASE_S;
}
