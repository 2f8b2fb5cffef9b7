export { KeyCache } from "./key-cache.js";
export type { KeyCacheOptions } from "./key-cache.js";
export { ZoneKeyCache, tableKeyLoader } from "./zone-keys.js";
export type { ZoneKeyLoader, ZoneKeys } from "./zone-keys.js";
