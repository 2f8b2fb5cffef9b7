import { describe, expect, it } from "vitest";

import { decodeFieldList, encodeFields, fieldsToArgs } from "./codec.js";

describe("flat-field codec", () => {
  it("omits null and undefined, never sends the string null", () => {
    expect(encodeFields({ a: "1", b: null, c: undefined })).toEqual({ a: "1" });
  });
  it("serializes objects and arrays as JSON text in one field, scalars as strings", () => {
    expect(encodeFields({ metadata_json: { k: "v" }, ids: ["x"], n: 3, ok: false })).toEqual({
      metadata_json: '{"k":"v"}',
      ids: '["x"]',
      n: "3",
      ok: "false",
    });
  });
  it("round-trips through the XADD argument list", () => {
    const fields = { a: "x\ny", "b=c": "", "ü": "😀" };
    expect(decodeFieldList(fieldsToArgs(fields))).toEqual(fields);
  });
  it("reads a nil payload (entry trimmed while pending) as undefined", () => {
    expect(decodeFieldList(null)).toBeUndefined();
  });

  it("keeps a field named __proto__ or constructor as an ordinary own field (no prototype change)", () => {
    const decoded = decodeFieldList(["__proto__", "x", "constructor", "y", "a", "1"])!;
    expect(Object.keys(decoded)).toEqual(["__proto__", "constructor", "a"]);
    expect(decoded["__proto__"]).toBe("x");
    expect(Object.getPrototypeOf(decoded)).toBeNull();
  });
});
