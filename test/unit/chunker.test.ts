import { createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chunkBytes, chunkFile, createCutter } from '../../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { GEAR_TABLE } from '../../agent/chunk/gear.js'
import { verifyFileChunks } from '../../agent/chunk/verify.js'
import { endOf, planSegments, stitch } from '../../agent/chunk/split.js'
import type { PlacedChunk } from '../../agent/store/types.js'
import type { ChunkingParams } from '../../protocol/manifest.js'

import { pseudoRandom } from '../helpers/bytes.js'

const hex = (id: Uint8Array): string => Buffer.from(id).toString('hex')
const describeChunks = (chunks: PlacedChunk[]): string[] => chunks.map(c => `${c.offset}+${c.size}:${hex(c.id)}`)

const GEAR: ChunkingParams = { algorithm: 'gear', avgBits: 15, minSize: 16 * 1024, maxSize: 256 * 1024 }
const RABIN: ChunkingParams = { algorithm: 'rabin', avgBits: 15, minSize: 16 * 1024, maxSize: 256 * 1024 }
const ALGORITHMS = [GEAR, RABIN]

function cutsWithFeed (data: Uint8Array, params: ChunkingParams, feed: number): number[] {
  const cutter = createCutter(params)
  const sizes: number[] = []
  for (let o = 0; o < data.length; o += feed) sizes.push(...cutter.push(data.subarray(o, Math.min(o + feed, data.length))))
  const rest = cutter.finish()
  if (rest > 0) sizes.push(rest)
  return sizes
}

/** Random stretches, long zero runs and a short repeating pattern: the inputs where min/max matter. */
function mixedData (): Uint8Array {
  const parts = [pseudoRandom(700_000, 1), new Uint8Array(1_500_000), pseudoRandom(300_000, 2), new Uint8Array(600_000).map((_, i) => i % 7), pseudoRandom(50_000, 3)]
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) { out.set(p, o); o += p.length }
  return out
}

describe('chunker', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'deltamesh-chunker-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('DEFAULT_CHUNKING is the measured choice (changing it changes every chunk id of new trees)', () => {
    expect(DEFAULT_CHUNKING).toEqual({ algorithm: 'gear', avgBits: 15, minSize: 16384, maxSize: 262144 })
  })

  describe.each(ALGORITHMS)('$algorithm', (params) => {
    it('cuts identically whatever the feed sizes', () => {
      const data = pseudoRandom(4 * 1024 * 1024, 11)
      const whole = cutsWithFeed(data, params, data.length)
      expect(whole.length).toBeGreaterThan(20)
      for (const feed of [4096, 65_537, 1024 * 1024]) expect(cutsWithFeed(data, params, feed)).toEqual(whole)
      // Byte-by-byte feeding (slow through rabin-wasm's per-call copies): a shorter stretch.
      const small = data.subarray(0, 200_000)
      const smallWhole = cutsWithFeed(small, params, small.length)
      expect(smallWhole.length).toBeGreaterThan(2)
      for (const feed of [1, 7]) expect(cutsWithFeed(small, params, feed)).toEqual(smallWhole)
    })

    it('respects minSize and maxSize exactly (only the last chunk may be smaller)', () => {
      const data = mixedData()
      const sizes = cutsWithFeed(data, params, 1 << 20)
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length)
      for (const s of sizes.slice(0, -1)) {
        expect(s).toBeGreaterThanOrEqual(params.minSize)
        expect(s).toBeLessThanOrEqual(params.maxSize)
      }
      expect(sizes.at(-1)).toBeLessThanOrEqual(params.maxSize)
      expect(sizes).toContain(params.maxSize) // the zero run can only be cut at max
      const small = { ...params, minSize: 100, maxSize: 300, avgBits: 8 }
      const smallSizes = cutsWithFeed(data.subarray(0, 200_000), small, 999)
      for (const s of smallSizes.slice(0, -1)) expect(s >= 100 && s <= 300).toBe(true)
    })

    it('handles empty and tiny inputs', async () => {
      expect(chunkBytes(new Uint8Array(0), params)).toEqual([])
      const one = chunkBytes(Uint8Array.of(42), params)
      expect(one).toHaveLength(1)
      expect(one[0]).toMatchObject({ offset: 0, size: 1 })
      expect(hex(one[0]!.id)).toBe(createHash('sha256').update(Uint8Array.of(42)).digest('hex'))
      const belowMin = pseudoRandom(params.minSize - 1, 5)
      expect(chunkBytes(belowMin, params).map(c => c.size)).toEqual([params.minSize - 1])
      await writeFile(join(dir, 'empty'), new Uint8Array(0))
      expect(await chunkFile(join(dir, 'empty'), params)).toEqual([])
    })

    it('keeps ≥ 95 % of chunks when 100 bytes are inserted near the start of 64 MiB', () => {
      const data = pseudoRandom(64 * 1024 * 1024, 7)
      const edited = new Uint8Array(data.length + 100)
      edited.set(data.subarray(0, 1000))
      edited.set(pseudoRandom(100, 9), 1000)
      edited.set(data.subarray(1000), 1100)
      const before = chunkBytes(data, params)
      const after = chunkBytes(edited, params)
      const known = new Set(before.map(c => hex(c.id)))
      const kept = after.filter(c => known.has(hex(c.id))).length
      expect(before.length).toBeGreaterThan(1000)
      expect(kept / before.length).toBeGreaterThanOrEqual(0.95)
      // In practice only the chunk holding the edit changes (measured: 1 of ~1300 on random data).
      expect(before.length - kept).toBeLessThanOrEqual(3)
    })

    it('chunkFile equals chunkBytes on the same bytes, whatever the read buffer', async () => {
      const data = mixedData()
      const path = join(dir, `mixed-${params.algorithm}`)
      await writeFile(path, data)
      const expected = describeChunks(chunkBytes(data, params))
      expect(describeChunks(await chunkFile(path, params))).toEqual(expected)
      expect(describeChunks(await chunkFile(path, params, { readBufferBytes: 100_003 }))).toEqual(expected)
      let offset = 0
      for (const c of await chunkFile(path, params)) { expect(c.offset).toBe(offset); offset += c.size }
      expect(offset).toBe(data.length)
    })

    it('a range cut from a true cut point continues the true chain (what splitting relies on)', async () => {
      const data = pseudoRandom(6 * 1024 * 1024, 21)
      const path = join(dir, `range-${params.algorithm}`)
      await writeFile(path, data)
      const whole = chunkBytes(data, params)
      const from = whole[10]!.offset
      const tail = await chunkFile(path, params, { start: from })
      expect(describeChunks(tail)).toEqual(describeChunks(whole.slice(10)))
      // Segments from arbitrary offsets, stitched, give exactly the sequential result (a smaller maxSize
      // makes the minimum segment, 16 × maxSize, small enough for three segments here).
      const p = { ...params, avgBits: 14, maxSize: 64 * 1024 }
      const segments = planSegments(data.length, 3, p.maxSize)
      expect(segments).toHaveLength(3)
      let chain = await chunkFile(path, p, segments[0]!)
      for (const s of segments.slice(1)) {
        const stitched = stitch(chain, await chunkFile(path, p, s))
        expect(stitched).toBeDefined()
        chain = stitched!
      }
      expect(describeChunks(chain)).toEqual(describeChunks(chunkBytes(data, p)))
    })
  })

  it('stitch reports chains that never meet, so the caller re-cuts from the last true cut', () => {
    const params = { ...GEAR, minSize: 1024, maxSize: 4096 }
    const zeros = new Uint8Array(200_000) // only max-size cuts: chains from unaligned starts never meet
    const trueChain = chunkBytes(zeros.subarray(0, 100_000), params).slice(0, -1)
    const other = chunkBytes(zeros.subarray(50_001), params).map(c => ({ ...c, offset: c.offset + 50_001 }))
    expect(stitch(trueChain, other)).toBeUndefined()
    expect(endOf(trueChain)).toBe(24 * 4096)
  })

  it('golden vector: fixed input gives fixed chunks (catches any change to the gear table or masks)', () => {
    const data = pseudoRandom(8 * 1024 * 1024, 0x5eed)
    expect(GEAR_TABLE.slice(0, 4)).toEqual(Int32Array.of(GOLDEN.table[0]!, GOLDEN.table[1]!, GOLDEN.table[2]!, GOLDEN.table[3]!))
    for (const params of ALGORITHMS) {
      const chunks = chunkBytes(data, params)
      const summary = {
        count: chunks.length,
        first: chunks.slice(0, 3).map(c => `${c.size}:${hex(c.id).slice(0, 16)}`),
        sizes: createHash('sha256').update(chunks.map(c => c.size).join(',')).digest('hex').slice(0, 16),
      }
      expect(summary).toEqual(GOLDEN[params.algorithm])
    }
  })

  it('verifyFileChunks: true for the chunks the file holds, false at the first byte that differs', async () => {
    const path = join(dir, 'verify')
    const data = mixedData()
    await writeFile(path, data)
    const chunks = chunkBytes(data, GEAR)
    for (const readBufferBytes of [undefined, 100_003, 4096]) expect(await verifyFileChunks(path, chunks, { readBufferBytes }), String(readBufferBytes)).toBe(true)
    // a run of chunks in the middle (one thread's share of a split check)
    const from = 5
    const start = chunks.slice(0, from).reduce((n, c) => n + c.size, 0)
    expect(await verifyFileChunks(path, chunks.slice(from, from + 7), { start, checkEnd: false })).toBe(true)
    expect(await verifyFileChunks(path, chunks.slice(from, from + 7), { start })).toBe(false) // the file goes on
    const edited = Uint8Array.from(data)
    edited[data.length >> 1] = (edited[data.length >> 1] as number) ^ 1
    await writeFile(path, edited)
    expect(await verifyFileChunks(path, chunks)).toBe(false)
    await writeFile(path, Buffer.concat([data, Buffer.of(0)]))
    expect(await verifyFileChunks(path, chunks)).toBe(false)
    await writeFile(path, data.subarray(0, data.length - 1))
    expect(await verifyFileChunks(path, chunks)).toBe(false)
    await writeFile(path, new Uint8Array(0))
    expect(await verifyFileChunks(path, [])).toBe(true)
    expect(await verifyFileChunks(path, chunks)).toBe(false)
    await expect(verifyFileChunks(path, chunks, { signal: AbortSignal.abort() })).rejects.toHaveProperty('name', 'AbortError')
  })

  it('chunkFile honours its AbortSignal', async () => {
    const path = join(dir, 'abort')
    await writeFile(path, pseudoRandom(32 * 1024 * 1024, 3))
    await expect(chunkFile(path, GEAR, { signal: AbortSignal.abort() })).rejects.toHaveProperty('name', 'AbortError')
    const controller = new AbortController()
    const running = chunkFile(path, RABIN, { signal: controller.signal, readBufferBytes: 64 * 1024 })
    setTimeout(() => controller.abort(), 20)
    await expect(running).rejects.toHaveProperty('name', 'AbortError')
  })
})

// Computed once from this implementation (gear) and rabin-wasm 0.1.5 (rabin); a change here means published
// manifests would no longer match what a re-scan produces.
const GOLDEN = {
  table: [-199436167, -1497755451, -1747605869, 869956046],
  gear: { count: 166, first: ['17723:77c34af2e43b0f4a', '50104:e5f87e6a9977a4f7', '57584:962f5c3466e6bc51'], sizes: 'c753a12f20d759e4' },
  rabin: { count: 173, first: ['43262:c966abcb24fd7f12', '30731:2c08d1a38d616280', '135302:11748765c5b9a230'], sizes: 'e065718bc1ea34f9' },
}
