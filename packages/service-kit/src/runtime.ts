/**
 * V8 settings of every Caracal service process. A service's main module imports this module first
 * (`import "@caracal/service-kit/runtime"`, before any other import), so the settings hold before any
 * other module runs; a benchmark that runs a service in its own process imports it first too.
 *
 * `--no-allocation-site-pretenuring`: V8 allocates objects straight into the old generation from an
 * allocation site where most objects lived long so far. In these services almost everything is
 * short-lived, yet some sites shared by every request turn pretenured once some of their objects lived
 * through a slow round trip (node-postgres's query promise is one; the others, inside the libraries, V8
 * names only by address). A pretenured object that then refers to young
 * objects (a promise to its result rows, say) keeps them alive through every young-generation collection
 * until a full one, so each batch's data is copied and promoted, and the collections pause for it. For
 * the outbox dispatcher, measured with `pnpm bench:gc` (docs/benchmarks.md "gc"): a drain with and
 * without this setting. Node documents changing V8 flags at run time as unsupported in general; this flag
 * only switches a heuristic of the allocator, so a runtime that ignores the change runs as before.
 */
import { setFlagsFromString } from "node:v8";

export const RUNTIME_V8_FLAGS = ["--no-allocation-site-pretenuring"] as const;

for (const flag of RUNTIME_V8_FLAGS) setFlagsFromString(flag);
