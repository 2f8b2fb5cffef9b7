#!/usr/bin/env node
/** Entry point of `caracal-streams` (`pnpm caracal-streams <command>`, or `npx caracal-streams`). */
import { createInterface } from "node:readline/promises";

import { runCli } from "./program.js";

const controller = new AbortController();
process.once("SIGINT", () => controller.abort());
process.once("SIGTERM", () => controller.abort());

process.exitCode = await runCli(process.argv.slice(2), process.env, {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(text.endsWith("\n") || text.startsWith("\r") ? text : `${text}\n`),
  columns: process.stdout.columns,
  isTTY: Boolean(process.stdout.isTTY && process.stdin.isTTY),
  async confirm(question) {
    if (!process.stdin.isTTY) return false;
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return /^y(es)?$/i.test((await rl.question(question)).trim());
    } finally {
      rl.close();
    }
  },
}, controller.signal);
