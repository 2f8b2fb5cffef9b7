import { describe, expect, it } from "vitest";

import { mayLosePrecision, rawTopLevelValues } from "./raw-json.js";

describe("raw top-level JSON values", () => {
  it("returns each wanted value's text exactly, nested strings and brackets included; the last duplicate wins", () => {
    const text = ' { "a" : {"x":"}\\"]","n":12345678901234567890123} , "skip":[1,{"b":"]"}], "m\\u0065ta":[0.1000000000000000055], "a":null,"z":-1E+2}';
    const got = rawTopLevelValues(text, new Set(["a", "meta", "z"]));
    expect(got.get("a")).toBe("null");
    expect(got.get("meta")).toBe("[0.1000000000000000055]");
    expect(got.get("z")).toBe("-1E+2");
    expect(rawTopLevelValues('{"a":{"x":"}\\"]","n":1}}', new Set(["a"])).get("a")).toBe('{"x":"}\\"]","n":1}');
  });
  it("flags only texts with a run of 16 or more digits", () => {
    expect(mayLosePrecision('{"n":12345678901234567890}')).toBe(true);
    expect(mayLosePrecision('{"n":0.1000000000000000055}')).toBe(true);
    expect(mayLosePrecision('{"n":123456789012345,"t":"2026-12-05T02:30:28.123456789Z"}')).toBe(false);
  });
});
