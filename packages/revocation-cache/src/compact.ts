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
const codes: number[] = new Array<number>(17).fill(0);
const HEX = new Int8Array(128).fill(-1);
for (let c = 48; c <= 57; c++) HEX[c] = c - 48;
for (let c = 97; c <= 102; c++) HEX[c] = c - 87;

/**
 * Packs the 36 code units `at(0..35)` into `codes` when they spell a lower-case canonical UUID
 * (8-4-4-4-12, hyphens at 8, 13, 18, 23); false otherwise.
 */
function packUuid(at: (i: number) => number): boolean {
  codes[0] = 117; // "u"
  let j = 1;
  for (let i = 0; i < 36; i += 2) {
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (at(i) !== 45) return false;
      i++;
    }
    const a = at(i);
    const b = at(i + 1);
    const hi = a < 128 ? HEX[a]! : -1;
    const lo = b < 128 ? HEX[b]! : -1;
    if (hi < 0 || lo < 0) return false;
    codes[j++] = (hi << 4) | lo;
  }
  return true;
}

export function compactKey(id: string): string {
  if (id.length === 36 && packUuid((i) => id.charCodeAt(i))) return String.fromCharCode.apply(null, codes);
  return `r${id}`;
}

/** `compactKey` of the UTF-8 bytes `buf[start, end)`, with no intermediate string for a UUID. */
export function compactKeyOfBytes(buf: Buffer, start: number, end: number): string {
  if (end - start === 36 && packUuid((i) => buf[start + i]!)) return String.fromCharCode.apply(null, codes);
  return `r${buf.toString("utf8", start, end)}`;
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
