/**
 * ZSTD for hyparquet-writer, which takes a synchronous `(bytes) => bytes` compressor: libzstd compiled to
 * WebAssembly (@bokuweb/zstd-wasm), no native build, no download at install. Node's own
 * `zlib.zstdCompressSync` compresses the same column chunks at the same speed and ratio but is
 * experimental and missing before Node 22.15, so the WebAssembly build stays (docs/decisions.md). The
 * module must be initialised once (it loads its .wasm).
 */
import { compress, init } from "@bokuweb/zstd-wasm";

/** Level 3 is zstd's default: most of the ratio of higher levels at a fraction of their CPU. */
export const ZSTD_LEVEL = 3;

let ready: Promise<void> | undefined;

export function initZstd(): Promise<void> {
  ready ??= init();
  return ready;
}

/** Call only after `initZstd()` resolved. */
export function zstdCompress(input: Uint8Array): Uint8Array {
  return compress(input, ZSTD_LEVEL);
}
