import { randomBytes } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { bitsPerByte, looksIncompressible, RANDOM_BITS_PER_BYTE } from '../../agent/chunk/entropy.js'
import { CompressionPolicy } from '../../agent/net/compression-policy.js'
import { chunkIdOf } from '../../protocol/chunk-id.js'

/** Deterministic English-like text: what a log or a source file looks like to the histogram. */
function text (n: number): Buffer {
  const words = ['chunk', 'subscriber', 'publisher', 'version', 'manifest', 'the', 'of', 'a', 'delta', 'gossip']
  let out = ''
  let x = 12345
  // a fixed LCG picks words and numbers: varied enough that gzip output of it looks random
  for (let i = 0; out.length < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out += (x % 5 === 0 ? String(x % 100_000) : words[(x >>> 8) % words.length]) + (i % 13 === 0 ? '.\n' : ' ')
  }
  return Buffer.from(out.slice(0, n))
}

describe('order-0 entropy pre-check', () => {
  it('measures 0 for one repeated byte and 8 for all 256 bytes equally often', () => {
    expect(bitsPerByte(new Uint8Array(0))).toBe(0)
    expect(bitsPerByte(new Uint8Array(4096))).toBe(0)
    expect(bitsPerByte(Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff))).toBeCloseTo(8, 10)
  })

  it('judges random and compressed samples incompressible, text and zeros not', () => {
    expect(looksIncompressible(randomBytes(16 * 1024))).toBe(true)
    const gz = gzipSync(text(400_000)).subarray(1024, 1024 + 16 * 1024)
    expect(bitsPerByte(gz)).toBeGreaterThan(RANDOM_BITS_PER_BYTE)
    expect(looksIncompressible(text(16 * 1024))).toBe(false)
    expect(looksIncompressible(new Uint8Array(16 * 1024))).toBe(false)
  })

  it('judges every 4th byte of a 16 KiB sample the same way: random and compressed above the line, text, code and zeros below', () => {
    // 300 random samples: the sparse estimate's bias (~0.045 bits) must not push any of them below the line
    for (let i = 0; i < 300; i++) expect(looksIncompressible(randomBytes(16 * 1024), 4)).toBe(true)
    const gz = gzipSync(text(400_000))
    for (let at = 1024; at + 16 * 1024 <= gz.byteLength; at += 16 * 1024) expect(looksIncompressible(gz.subarray(at, at + 16 * 1024), 4)).toBe(true)
    expect(looksIncompressible(text(16 * 1024), 4)).toBe(false)
    expect(looksIncompressible(new Uint8Array(16 * 1024), 4)).toBe(false)
    // machine code and tables: bytes 0-255 with a skew, as in an ELF's text section
    const skewed = Uint8Array.from({ length: 16 * 1024 }, (_, i) => ((i * 2654435761) >>> 24) % 160)
    expect(looksIncompressible(skewed, 4)).toBe(false)
  })

  it('leaves the verdict on text to brotli, which finds it compressible; random bytes are refused', () => {
    const policy = new CompressionPolicy({ batchBytes: 256 * 1024 })
    const plain = text(64 * 1024)
    const noise = randomBytes(64 * 1024)
    expect(policy.worthTrying(chunkIdOf(plain), plain)).toBe(true)
    expect(policy.worthTrying(chunkIdOf(noise), noise)).toBe(false)
    expect(policy.stats.incompressibleChunks).toBe(1)
  })

  it('judges a chunk no larger than a sample by its batch: one that does not shrink goes plain and is remembered', () => {
    const policy = new CompressionPolicy({ batchBytes: 256 * 1024 })
    // 2 KiB of random bytes: too few to show a random-level histogram, so only compressing tells
    const small = randomBytes(2048)
    const id = chunkIdOf(small)
    expect(looksIncompressible(small)).toBe(false)
    expect(policy.worthTrying(id, small)).toBe(true)
    expect(policy.pack([{ id, bytes: small }])).toEqual([{ type: 'BLOCK', id, bytes: small }])
    expect(policy.worthTrying(id, small)).toBe(false)
    const words = text(4096)
    expect(policy.worthTrying(chunkIdOf(words), words)).toBe(true)
    expect(policy.pack([{ id: chunkIdOf(words), bytes: words }])).toMatchObject([{ type: 'BLOCKS' }])
  })
})
