import { chunkIdOf } from '../../protocol/chunk-id.js'
import type { PlacedChunk } from '../../agent/store/types.js'

/** Deterministic pseudo-random bytes (xorshift32): the same on every machine, so golden values hold. */
export function pseudoRandom (length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length + 3)
  const words = new Uint32Array(bytes.buffer, 0, Math.floor(bytes.length / 4))
  let s = seed >>> 0 || 1
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    words[i] = s
  }
  return bytes.subarray(0, length)
}

/** Fixed-size blocks as chunks: a simple, predictable chunker for tests that are not about chunking. */
export function cutFixed (bytes: Uint8Array, block: number): PlacedChunk[] {
  const out: PlacedChunk[] = []
  for (let offset = 0; offset < bytes.byteLength; offset += block) {
    const size = Math.min(block, bytes.byteLength - offset)
    out.push({ id: chunkIdOf(bytes.subarray(offset, offset + size)), offset, size })
  }
  return out
}
