// Compression of BLOCKS payloads. Pure (CPU only). Brotli from node:zlib: measured (scripts/bench-codec.ts)
// against deflate on headers, shared libraries and .deb files; quality 3 compresses C headers to 0.19 (deflate
// -6: 0.19) at 2.5× deflate-6's speed, and passes incompressible data at ~450 MB/s. No native zstd binding
// usable here ships prebuilt binaries without an install script and a bounded decompressor.
import { brotliCompressSync, brotliDecompressSync, constants } from 'node:zlib'
import { InvalidMessageError } from './errors.js'
import { MAX_BATCH_RAW_BYTES } from './wire-limits.js'
import type { BatchCodec } from './messages.js'

/** Brotli quality for the wire: see the header comment and docs/design-notes.md for the numbers. */
export const WIRE_BROTLI_QUALITY = 3
/** Window 2^20: a whole MAX_BATCH_RAW_BYTES batch is in the compression context. */
const WIRE_BROTLI_LGWIN = 20

/** A compressed payload that does not inflate to exactly its declared size (corrupt, or a bomb). */
export class DecompressionError extends InvalidMessageError {
  static override name = 'DecompressionError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'DecompressionError'
  }
}

export function compressBatch (raw: Uint8Array, quality = WIRE_BROTLI_QUALITY): Uint8Array {
  return brotliCompressSync(raw, {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: quality,
      [constants.BROTLI_PARAM_LGWIN]: WIRE_BROTLI_LGWIN,
      [constants.BROTLI_PARAM_SIZE_HINT]: raw.byteLength,
    },
  })
}

/**
 * Inflates `payload` to exactly `expected` bytes. zlib stops at `maxOutputLength`, so a payload claiming to be
 * small but inflating to gigabytes costs at most `expected` bytes of memory before it is rejected.
 */
export function decompressBatch (codec: BatchCodec, payload: Uint8Array, expected: number): Uint8Array {
  if (codec !== 'br') throw new DecompressionError(`unknown codec ${String(codec)}`)
  if (!Number.isSafeInteger(expected) || expected < 0 || expected > MAX_BATCH_RAW_BYTES) {
    throw new DecompressionError(`declared size ${expected} outside [0, ${MAX_BATCH_RAW_BYTES}]`)
  }
  let out: Buffer
  try {
    // maxOutputLength must be ≥ 1; one byte more than expected tells "too long" apart from "exactly right"
    out = brotliDecompressSync(payload, { maxOutputLength: expected + 1 })
  } catch (err) {
    throw new DecompressionError(`payload does not inflate to ${expected} bytes: ${(err as Error).message}`, { cause: err })
  }
  if (out.byteLength !== expected) throw new DecompressionError(`payload inflates to ${out.byteLength} bytes, ${expected} declared`)
  return out
}
