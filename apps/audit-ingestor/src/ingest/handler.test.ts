import { describe, expect, it } from "vitest";

import { isDatabaseUnavailable } from "./handler.js";

const pgError = (code: string) => Object.assign(new Error(`pg ${code}`), { code });

describe("isDatabaseUnavailable", () => {
  it("is true for an unreachable, stopping or exhausted database", () => {
    for (const code of ["08006", "08001", "57P01", "57P02", "57P03", "53300", "53200", "53100", "ECONNREFUSED", "ECONNRESET"]) {
      expect(isDatabaseUnavailable(pgError(code)), code).toBe(true);
    }
    expect(isDatabaseUnavailable(new Error("timeout exceeded when trying to connect"))).toBe(true);
    expect(isDatabaseUnavailable(new Error("Connection terminated unexpectedly"))).toBe(true);
  });

  it("is false for a row PostgreSQL refuses (a protocol violation of its bytes included) or a conflict: those are the entry's own", () => {
    for (const code of ["22P05", "23505", "22021", "40001", "42P01", "08P01", "22008"]) {
      expect(isDatabaseUnavailable(pgError(code)), code).toBe(false);
    }
  });
});
