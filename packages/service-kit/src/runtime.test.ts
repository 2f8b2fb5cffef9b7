import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

import { findRepoRoot } from "@caracal/testkit/bench-report";
import { describe, expect, it } from "vitest";

import { RUNTIME_V8_FLAGS } from "./runtime.js";

describe("service runtime settings", () => {
  it("are imported by every service's main module before any other module", () => {
    const apps = join(findRepoRoot(), "apps");
    const mains = readdirSync(apps).map((app) => join(apps, app, "src", "main.ts"));
    expect(mains.length).toBeGreaterThan(0);
    for (const main of mains) {
      const firstImport = readFileSync(main, "utf8")
        .split("\n")
        .find((line) => line.startsWith("import "));
      expect(firstImport, main).toBe('import "@caracal/service-kit/runtime";');
    }
  });

  it("name only flags this Node's V8 knows (an unknown one makes node exit with 'bad option')", () => {
    for (const flag of RUNTIME_V8_FLAGS) {
      const run = spawnSync(process.execPath, [flag, "-e", "0"], { encoding: "utf8" });
      expect({ flag, status: run.status, stderr: run.stderr }).toEqual({ flag, status: 0, stderr: "" });
    }
  });
});
