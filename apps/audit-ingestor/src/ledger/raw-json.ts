/**
 * The raw text of top-level values of a JSON object text, for the jsonb columns derived from an event:
 * `JSON.parse` turns a number beyond a double's precision (`12345678901234567890123`) into a nearby
 * double, and a column re-serialized from it would no longer equal the payload it came from (which
 * PostgreSQL parses exactly). Only events whose text holds such a number take this path.
 */

/**
 * True when the text holds a run of 16 or more digits (one dot may sit among them): a number a double
 * may not hold exactly. A plain loop, not a regular expression: a backtracking pattern over a long run of
 * digits (a 10 MB string of them) exhausts the stack.
 */
export function mayLosePrecision(data: string): boolean {
  let digits = 0;
  let dotSeen = false;
  for (let i = 0; i < data.length; i++) {
    const c = data.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits >= 16) return true;
    } else if (c === 46 && digits > 0 && !dotSeen) {
      dotSeen = true;
    } else {
      digits = 0;
      dotSeen = false;
    }
  }
  return false;
}

/**
 * The raw text of each top-level value of `text` (a JSON object, already known to be valid JSON) whose
 * key is in `keys`; for a repeated key the last one wins, as in `JSON.parse` and jsonb.
 */
export function rawTopLevelValues(text: string, keys: ReadonlySet<string>): Map<string, string> {
  const out = new Map<string, string>();
  let i = skipSpace(text, 0);
  if (text[i] !== "{") return out;
  i++;
  for (;;) {
    i = skipSpace(text, i);
    if (text[i] === "}") return out;
    const keyEnd = stringEnd(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipSpace(text, keyEnd);
    i++; // ':'
    i = skipSpace(text, i);
    const valueEnd = valueEndAt(text, i);
    if (keys.has(key)) out.set(key, text.slice(i, valueEnd));
    i = skipSpace(text, valueEnd);
    if (text[i] === ",") i++;
    else return out;
  }
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && (text[i] === " " || text[i] === "\n" || text[i] === "\r" || text[i] === "\t")) i++;
  return i;
}

/** Index just past the string starting at `i` (a quote). */
function stringEnd(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    if (text[j] === "\\") j++;
    else if (text[j] === '"') return j + 1;
  }
  return text.length;
}

/** Index just past the JSON value starting at `i`. */
function valueEndAt(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c === "{" || c === "[") {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text[j];
      if (d === '"') j = stringEnd(text, j) - 1;
      else if (d === "{" || d === "[") depth++;
      else if (d === "}" || d === "]") {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return text.length;
  }
  let j = i;
  while (j < text.length && text[j] !== "," && text[j] !== "}" && text[j] !== " " && text[j] !== "\n" && text[j] !== "\r" && text[j] !== "\t") j++;
  return j;
}
