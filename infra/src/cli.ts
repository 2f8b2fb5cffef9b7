/** `pnpm validate:deploy`: every deployment file checked (src/validate.ts); exit 1 when any has a problem. */
import { fileURLToPath } from "node:url";

import { validateRepository } from "./validate.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
let failed = 0;
for (const [file, problems] of validateRepository(root)) {
  if (problems.length === 0) console.log(`ok    ${file}`);
  else {
    failed++;
    console.log(`FAIL  ${file}`);
    for (const p of problems) console.log(`      ${p}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
