/**
 * Flat-field encoding (WIRE §2): every value is a string; JSON values travel as JSON text in one field;
 * null and undefined are omitted, never sent as "null".
 */

export type Fields = Record<string, string>;
export type FieldInput = Record<string, string | number | boolean | bigint | object | null | undefined>;

/**
 * Encodes a record into flat string fields. Objects and arrays become JSON text. `omit` names a key to
 * leave out (a hot path drops `_sig` here rather than copying the result).
 */
export function encodeFields(input: FieldInput, omit?: string): Fields {
  const out: Fields = Object.create(null) as Fields;
  for (const key of Object.keys(input)) {
    const value = input[key];
    if (value === null || value === undefined || key === omit) continue;
    out[key] = typeof value === "object" ? JSON.stringify(value) : String(value);
  }
  return out;
}

/** Flattens fields into the `k1, v1, k2, v2, ...` argument list of XADD. */
export function fieldsToArgs(fields: Fields): string[] {
  const args: string[] = [];
  for (const key in fields) args.push(key, fields[key] as string);
  return args;
}

/**
 * Decodes the raw `[k1, v1, k2, v2, ...]` list of a stream entry. Returns undefined for a nil payload
 * (an entry trimmed while pending). A repeated key keeps its last value, as Redis clients do. The object
 * has no prototype: a field named `__proto__` (or `constructor`) is an ordinary own field, kept for the
 * `_sig` check and the handler, never a prototype change.
 */
export function decodeFieldList(raw: readonly string[] | null | undefined): Fields | undefined {
  if (raw === null || raw === undefined) return undefined;
  const out: Fields = Object.create(null) as Fields;
  for (let i = 0; i + 1 < raw.length; i += 2) out[raw[i] as string] = raw[i + 1] as string;
  return out;
}
