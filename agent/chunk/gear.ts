import type { ChunkingParams } from '../../protocol/manifest.js'
import type { Cutter } from './cutter.js'

// FastCDC-style content-defined chunking (Xia et al., USENIX ATC 2016 / ToS 2020) in plain TypeScript:
// - gear rolling hash h = (h << 1) + G[byte]: with 32-bit h, the top k bits depend on the last ~32 bytes only;
// - cut-point skipping: the first minSize bytes of a chunk are not hashed at all (the hash starts at minSize),
//   so about min/avg of the input costs nothing;
// - normalized chunking (level 2): a harder mask (avgBits + 2) before the normal point minSize + 2^avgBits and an
//   easier one (avgBits - 2) after it, which pulls chunk sizes towards the normal point and away from maxSize.
// The masks take the TOP bits of h because they mix the most bytes (bit k depends on the last k + 1 bytes).
// Changing the table, the masks or the normal point changes every chunk id: the golden test guards them.

/** 256 pseudo-random 32-bit values from splitmix32 with a fixed seed: part of the chunk format, never change it. */
export const GEAR_TABLE: Int32Array = (() => {
  const table = new Int32Array(256)
  let state = 0x64656c74 // "delt"
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) | 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad)
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97)
    table[i] = z ^ (z >>> 15)
  }
  return table
})()

const NORMALIZATION_LEVEL = 2

function topBitsMask (bits: number): number {
  const b = Math.max(1, Math.min(31, bits))
  return (((2 ** b) - 1) * (2 ** (32 - b))) | 0
}

// The hash carried out of scan() when it reaches the end of its range without a cut (no allocation per call).
let carriedHash = 0

/** Scans bytes[from, to) continuing hash h; returns the index just after the first cut point, or -1 (hash in carriedHash). */
function scan (bytes: Uint8Array, from: number, to: number, h: number, mask: number): number {
  const g = GEAR_TABLE
  for (let i = from; i < to; i++) {
    h = ((h << 1) + (g[bytes[i]!]!)) | 0
    if ((h & mask) === 0) return i + 1
  }
  carriedHash = h
  return -1
}

export class GearCutter implements Cutter {
  readonly params: ChunkingParams
  private readonly min: number
  private readonly max: number
  private readonly normal: number
  private readonly maskSmall: number
  private readonly maskLarge: number
  /** Bytes of the current chunk seen so far. */
  private len = 0
  private hash = 0

  constructor (params: ChunkingParams) {
    this.params = params
    this.min = params.minSize
    this.max = params.maxSize
    this.normal = Math.min(params.maxSize, params.minSize + 2 ** params.avgBits)
    this.maskSmall = topBitsMask(params.avgBits + NORMALIZATION_LEVEL)
    this.maskLarge = topBitsMask(params.avgBits - NORMALIZATION_LEVEL)
  }

  push (bytes: Uint8Array): number[] {
    const cuts: number[] = []
    const n = bytes.length
    let i = 0
    while (i < n) {
      if (this.len < this.min) {
        const skip = Math.min(this.min - this.len, n - i)
        this.len += skip
        i += skip
        if (this.len < this.min) break
        this.hash = 0
        if (this.len >= this.max) { cuts.push(this.len); this.len = 0; continue }
        if (i === n) break
      }
      const small = this.len < this.normal
      const limit = small ? this.normal : this.max
      const to = i + Math.min(limit - this.len, n - i)
      const cut = scan(bytes, i, to, this.hash, small ? this.maskSmall : this.maskLarge)
      if (cut >= 0) {
        cuts.push(this.len + cut - i)
        this.len = 0
        i = cut
        continue
      }
      this.hash = carriedHash
      this.len += to - i
      i = to
      if (this.len >= this.max) { cuts.push(this.len); this.len = 0 }
    }
    return cuts
  }

  finish (): number {
    const rest = this.len
    this.len = 0
    this.hash = 0
    return rest
  }
}
