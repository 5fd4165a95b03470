import { describe, expect, it } from 'vitest'
import { chunkBytes } from '../../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { computeChunkDeltas, runChunkDeltaPhase, type ChunkDeltaStats } from '../../agent/delta/chunk-deltas.js'
import { silentLogger } from '../../agent/core/log.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { encodeDelta } from '../../protocol/delta.js'
import type { FileEntry } from '../../protocol/manifest.js'
import { prng, pseudoRandomBytes } from '../../agent/demo/tree-gen.js'

// Large files get a delta per new chunk (against the previous content around it): a few edited lines in a
// multi-megabyte text file travel as a few hundred bytes; a delta that rebuilds other bytes is refused.

function textFile (lines: number, seed: string): string {
  const rand = prng(seed)
  return Array.from({ length: lines }, (_, i) => `Count = ${i}\nEntropy = ${Math.floor(rand() * 1e16).toString(16)}${Math.floor(rand() * 1e16).toString(16)}\n`).join('')
}

function entry (path: string, bytes: Buffer, chunks: Map<string, Uint8Array>): FileEntry {
  const cut = chunkBytes(bytes, DEFAULT_CHUNKING)
  for (const c of cut) chunks.set(toHex(c.id), bytes.subarray(c.offset, c.offset + c.size))
  return { type: 'file', path, mode: 0o644, mtimeMs: 0, size: bytes.byteLength, chunks: cut.map(c => ({ id: c.id, size: c.size })) }
}

const index = (m: Map<string, Uint8Array>): { readChunk: (id: ChunkId) => Promise<Uint8Array | undefined> } => ({ readChunk: async id => m.get(toHex(id)) })

describe('chunk deltas of large files', () => {
  it('rebuild the edited chunks of a 3 MB file from the previous content; a lying delta is refused', async () => {
    const before = Buffer.from(textFile(60_000, 'large'))
    expect(before.byteLength).toBeGreaterThan(2 * 1024 * 1024)
    const text = before.toString()
    // three edited lines far apart, as between two release tarballs
    const after = Buffer.from(text.replace('Count = 1000\n', 'Count = 1000 # fixed\n').replace('Count = 30000\n', 'Count = 30000\nCount = 30000b\n').replace('Count = 59000\n', 'Count = 59000\r\n'))
    const publisherChunks = new Map<string, Uint8Array>()
    const base = entry('test/evprand.txt', before, publisherChunks)
    const subscriberChunks = new Map(publisherChunks) // the subscriber holds v1
    const target = entry('test/evprand.txt', after, publisherChunks)
    const missing = new Set(target.chunks.map(c => toHex(c.id)).filter(h => !subscriberChunks.has(h)))
    expect(missing.size).toBeGreaterThanOrEqual(3)

    const deltas = new Map<string, Uint8Array>()
    const stats: ChunkDeltaStats = { files: 0, candidates: 0, stored: 0, baseUnavailable: 0, targetBytes: 0, deltaBytes: 0 }
    await computeChunkDeltas({ base, target, index: index(publisherChunks), catalog: { putDelta: async (k, d) => { deltas.set(toHex(k), d) } }, stats })
    expect(stats.stored).toBe(missing.size)
    expect(stats.deltaBytes).toBeLessThan(stats.targetBytes / 50)

    const filled = new Map<string, Uint8Array>()
    const lieAbout = [...deltas.keys()][0]!
    const reports: string[] = []
    const r = await runChunkDeltaPhase({
      missing, targets: [target], previous: new Map([[base.path, base]]), index: index(subscriberChunks), catalog: { putDelta: async () => {} },
      log: silentLogger(), signal: AbortSignal.timeout(10_000), onBadDelta: reason => reports.push(reason),
      fetchDeltas: async keys => new Map(keys.map(k => [toHex(k), toHex(k) === lieAbout ? encodeDelta(new Uint8Array(0), Buffer.alloc(1000, 7)) : deltas.get(toHex(k))!])),
      fill: async (id, bytes) => { filled.set(toHex(id), bytes); return true },
    })
    expect(r).toMatchObject({ applied: deltas.size - 1, rejected: 1 })
    expect(reports).toHaveLength(1)
    expect(missing.size).toBe(1) // the lied-about chunk stays planned: fetched plainly
    for (const [hex, bytes] of filled) expect(Buffer.from(bytes).equals(Buffer.from(publisherChunks.get(hex)!))).toBe(true)
  })

  it('gives up on a large file whose new chunks are new content, not edits (bounded publisher work)', async () => {
    const chunks = new Map<string, Uint8Array>()
    // compressed packages: no byte of the new image's new chunks is found in the old one
    const base = entry('images/disk.img', pseudoRandomBytes('old image', 2 * 1024 * 1024), chunks)
    const target = entry('images/disk.img', pseudoRandomBytes('new image', 2 * 1024 * 1024), chunks)
    const stats: ChunkDeltaStats = { files: 0, candidates: 0, stored: 0, baseUnavailable: 0, targetBytes: 0, deltaBytes: 0 }
    await computeChunkDeltas({ base, target, index: index(chunks), catalog: { putDelta: async () => {} }, stats })
    expect(target.chunks.length).toBeGreaterThan(20)
    expect(stats).toMatchObject({ candidates: 8, stored: 0 })
  })

  it('an image of compressed packages: the chunks where old bytes meet new ones pay, the new packages inside are skipped', async () => {
    const chunks = new Map<string, Uint8Array>()
    // four "packages" of random bytes; v2 replaces the second by a new one of another length, off chunk boundaries
    const pkg = (name: string, size: number): Buffer => pseudoRandomBytes(name, size)
    const before = Buffer.concat([pkg('a', 700_000), pkg('b-1.0', 900_000), pkg('c', 700_000), pkg('d', 300_000)])
    const after = Buffer.concat([pkg('a', 700_000), pkg('b-1.1', 1_100_000), pkg('c', 700_000), pkg('d', 300_000)])
    const base = entry('repo.iso', before, chunks)
    const target = entry('repo.iso', after, chunks)
    const had = new Set(base.chunks.map(c => toHex(c.id)))
    const fresh = target.chunks.filter(c => !had.has(toHex(c.id)))
    expect(fresh.length).toBeGreaterThan(15)
    const stats: ChunkDeltaStats = { files: 0, candidates: 0, stored: 0, baseUnavailable: 0, targetBytes: 0, deltaBytes: 0 }
    const deltas = new Map<string, Uint8Array>()
    await computeChunkDeltas({ base, target, index: index(chunks), catalog: { putDelta: async (k, d) => { deltas.set(toHex(k), d) } }, stats })
    // both boundary chunks (part 'a' or 'c', part the new package) travel as deltas carrying only their new part
    expect(stats.stored).toBeGreaterThanOrEqual(2)
    expect(stats.deltaBytes).toBeLessThan(stats.targetBytes * 0.9)
    // and the work stayed bounded: the chunks near the edges plus the tries inside the run before giving up
    expect(stats.candidates).toBeLessThanOrEqual(2 * 4 + 8)
  })
})
