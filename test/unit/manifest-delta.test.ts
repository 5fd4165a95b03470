import { describe, expect, it } from 'vitest'
import { chunkBytes } from '../../agent/chunk/chunker.js'
import { DEFAULT_CHUNKING } from '../../protocol/chunking.js'
import { computeManifestDeltas, deltaPairs, manifestViaDeltas } from '../../agent/delta/manifest-delta.js'
import { silentLogger } from '../../agent/core/log.js'
import { chunkIdOf, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { encodeDelta } from '../../protocol/delta.js'
import { ManifestWriter } from '../../protocol/manifest.js'
import { deltaBases, manifestDeltaBase, MANIFEST_DELTA_MARGIN } from '../../protocol/manifest-delta.js'
import type { ChunkRef } from '../../protocol/manifest.js'

// Manifest deltas: both sides derive the same base window; the publisher's deltas rebuild the new manifest's
// chunks from the previous manifest; a delta that rebuilds other bytes is rejected and its chunk stays missing.

const KiB = 1024
const fake = (n: number, size: number): ChunkRef[] => Array.from({ length: n }, (_, i) => ({ id: chunkIdOf(Buffer.from(`c${size}-${i}`)), size }))

/** A manifest of `files` entries whose mtimes depend on `release` (a release tarball stamps every file). */
function manifest (files: number, release: number, changed: Set<number> = new Set()): Uint8Array {
  const w = new ManifestWriter({ chunking: DEFAULT_CHUNKING })
  const parts = [w.start()]
  parts.push(w.write({ type: 'dir', path: 'src', mode: 0o755, mtimeMs: release }))
  for (let i = 0; i < files; i++) {
    const id = chunkIdOf(Buffer.from(`file ${i}${changed.has(i) ? ` edited in ${release}` : ''}`))
    parts.push(w.write({ type: 'file', path: `src/file-${String(i).padStart(5, '0')}.c`, mode: 0o644, mtimeMs: release, size: 1000 + i, chunks: [{ id, size: 1000 + i }] }))
  }
  return Buffer.concat(parts)
}

function memoryCatalog (): { blobs: Map<string, Uint8Array>, deltas: Map<string, Uint8Array>, getBlob: (id: ChunkId) => Promise<Uint8Array | undefined>, putBlob: (id: ChunkId, b: Uint8Array) => Promise<void>, putDelta: (k: Uint8Array, b: Uint8Array) => Promise<void> } {
  const blobs = new Map<string, Uint8Array>()
  const deltas = new Map<string, Uint8Array>()
  return {
    blobs, deltas,
    getBlob: async id => blobs.get(toHex(id)),
    putBlob: async (id, b) => { blobs.set(toHex(id), b) },
    putDelta: async (k, b) => { deltas.set(toHex(k), b) },
  }
}

function store (catalog: ReturnType<typeof memoryCatalog>, bytes: Uint8Array): ChunkRef[] {
  return chunkBytes(bytes, DEFAULT_CHUNKING).map(c => { catalog.blobs.set(toHex(c.id), bytes.subarray(c.offset, c.offset + c.size)); return { id: c.id, size: c.size } })
}

describe('manifest deltas', () => {
  it('takes the previous chunks around the target\'s proportional position, margin included', () => {
    const prev = fake(5, 256 * KiB)
    expect(manifestDeltaBase(prev, prev, 3).map(c => prev.indexOf(c))).toEqual([2, 3, 4])
    // a previous manifest half as long: target 3 of 5 (768–1024 KiB) maps to 384–512 KiB of it
    const half = fake(5, 128 * KiB)
    expect(manifestDeltaBase(half, prev, 3).map(c => half.indexOf(c))).toEqual([2, 3, 4])
    expect(manifestDeltaBase(half, prev, 0).map(c => half.indexOf(c))).toEqual([0, 1])
    expect(MANIFEST_DELTA_MARGIN).toBe(64 * KiB)
    expect(manifestDeltaBase([], prev, 0)).toEqual([])
  })

  it('bases a run of new chunks on the old chunks between the same two shared ones, however far the list shifted', () => {
    const prev = fake(40, 16 * KiB)
    const news = fake(60, 15 * KiB)
    const at = (list: ChunkRef[], base: ChunkRef[] | undefined): number[] => (base ?? []).map(c => list.indexOf(c))
    // an edit in place: X replaced prev[10]; its base is prev[10] alone (the gap between the anchors 9 and 11)
    const edited = [...prev.slice(0, 10), news[0]!, ...prev.slice(11)]
    expect(at(prev, deltaBases(prev, edited, 64 * KiB).get(10))).toEqual([10])
    // 30 new chunks inserted at the front shift everything (a grown image); an edit near the end still maps
    // onto its own old chunks (the whole-list proportional position would be prev[34], 75 KiB off)
    const grown = [...news.slice(1, 31), ...prev.slice(0, 30), news[31]!, news[32]!, ...prev.slice(33)]
    const bases = deltaBases(prev, grown, 0)
    // two new chunks (30 KiB) replaced three old ones (48 KiB): each maps onto its scaled share of them
    expect(at(prev, bases.get(60))).toEqual([30, 31])
    expect(at(prev, bases.get(61))).toEqual([31, 32])
    // the inserted run has an empty gap before prev[0]: pure insertion, nothing to base a delta on
    for (let i = 0; i < 30; i++) expect(bases.has(i)).toBe(false)
    // a margin widens the window but never past the gap
    expect(at(prev, deltaBases(prev, edited, 10 * 16 * KiB).get(10))).toEqual([10])
    // no shared chunk at all: the whole-list proportional window
    const rewritten = news.slice(0, 40)
    expect(at(prev, deltaBases(prev, rewritten).get(5))).toEqual(at(prev, manifestDeltaBase(prev, rewritten, 5)))
    // content moved (the right anchor lies before the left one in prev): proportional as well
    const moved = [prev[20]!, news[0]!, prev[5]!, ...prev.slice(21)]
    expect(at(prev, deltaBases(prev, moved).get(1))).toEqual(at(prev, manifestDeltaBase(prev, moved, 1)))
    expect(deltaBases([], edited).size).toBe(0)
  })

  it('marks new chunks near a shared one as at the edge of their run', () => {
    const prev = fake(30, 16 * KiB)
    const news = fake(20, 15 * KiB)
    const next = [...prev.slice(0, 10), ...news.slice(0, 12), ...prev.slice(10)]
    const edge = new Map(deltaPairs(prev, next).map(p => [news.findIndex(c => toHex(c.id) === toHex(p.target.id)), p.atEdge]))
    // pure insertion: no base, no pair; with prev[10] dropped the run replaces it and every new chunk has one
    expect(edge.size).toBe(0)
    const replaced = [...prev.slice(0, 10), ...news.slice(0, 12), ...prev.slice(11)]
    const marks = deltaPairs(prev, replaced).map(p => p.atEdge)
    expect(marks).toEqual([true, true, true, true, false, false, false, false, true, true, true, true])
  })

  it('without shared chunks, finds the same proportional windows by binary search as the definition does by a scan', () => {
    // the definition, as it was written first: every previous chunk overlapping the scaled range ± margin
    const reference = (prev: ChunkRef[], next: ChunkRef[], index: number): ChunkRef[] => {
      const prevTotal = BigInt(prev.reduce((n, c) => n + c.size, 0))
      const nextTotal = BigInt(next.reduce((n, c) => n + c.size, 0))
      if (prevTotal === 0n || nextTotal === 0n) return []
      let start = 0
      for (let i = 0; i < index; i++) start += next[i]!.size
      const from = Number(BigInt(start) * prevTotal / nextTotal) - MANIFEST_DELTA_MARGIN
      const to = Number(BigInt(start + next[index]!.size) * prevTotal / nextTotal) + MANIFEST_DELTA_MARGIN
      const out: ChunkRef[] = []
      let offset = 0
      for (const c of prev) { if (offset + c.size > from && offset < to) out.push(c); offset += c.size }
      return out
    }
    let seed = 7
    const rand = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed % n }
    for (let round = 0; round < 40; round++) {
      const sized = (n: number, max: number): ChunkRef[] => Array.from({ length: n }, (_, i) => ({ id: chunkIdOf(Buffer.from(`r${round}-${i}-${n}`)), size: 1 + rand(max) }))
      const prev = sized(rand(60), round % 2 === 0 ? 200 * KiB : 8 * KiB)
      const next = sized(1 + rand(60), round % 3 === 0 ? 300 * KiB : 16 * KiB)
      const bases = deltaBases(prev, next)
      for (let i = 0; i < next.length; i++) expect(bases.get(i) ?? [], `round ${round} chunk ${i}`).toEqual(reference(prev, next, i))
    }
  })

  it('rebuilds every new chunk of the next manifest from the previous one, in a small fraction of its bytes', async () => {
    const publisher = memoryCatalog()
    const prev = store(publisher, manifest(4000, 1_700_000_000_000))
    const nextBytes = manifest(4000, 1_710_000_000_000, new Set([5, 900, 2500]))
    const next = store(publisher, nextBytes)
    expect(next.length).toBeGreaterThan(4)
    const stats = await computeManifestDeltas(publisher, prev, next)
    expect(stats.stored).toBe(next.length) // every chunk changed (new mtimes), every one has a delta
    expect(stats.deltaBytes).toBeLessThan(nextBytes.byteLength / 10)

    const subscriber = memoryCatalog()
    for (const c of prev) subscriber.blobs.set(toHex(c.id), publisher.blobs.get(toHex(c.id)) as Uint8Array)
    const r = await manifestViaDeltas({
      prev, next, missing: next, catalog: subscriber, log: silentLogger(), signal: AbortSignal.timeout(10_000),
      fetchDeltas: async keys => new Map(keys.map(k => [toHex(k), publisher.deltas.get(toHex(k)) as Uint8Array])),
    })
    expect(r).toMatchObject({ asked: next.length, applied: next.length, rejected: 0, missing: [] })
    expect(Buffer.concat(next.map(c => subscriber.blobs.get(toHex(c.id)) as Uint8Array)).equals(Buffer.from(nextBytes))).toBe(true)
    expect(subscriber.deltas.size).toBe(next.length) // verified deltas are kept, to serve them on
  })

  it('rejects a delta that rebuilds other bytes: the chunk stays missing and the sender is reported', async () => {
    const publisher = memoryCatalog()
    const prev = store(publisher, manifest(3000, 1))
    const next = store(publisher, manifest(3000, 2))
    await computeManifestDeltas(publisher, prev, next)
    const subscriber = memoryCatalog()
    for (const c of prev) subscriber.blobs.set(toHex(c.id), publisher.blobs.get(toHex(c.id)) as Uint8Array)
    const liar = deltaPairs(prev, next)[0]
    const reports: string[] = []
    const r = await manifestViaDeltas({
      prev, next, missing: next, catalog: subscriber, log: silentLogger(), signal: AbortSignal.timeout(10_000),
      onBadDelta: reason => reports.push(reason),
      fetchDeltas: async keys => new Map(keys.map(k => [toHex(k), toHex(k) === toHex(liar!.key) ? encodeDelta(new Uint8Array(0), Buffer.alloc(liar!.target.size, 1)) : publisher.deltas.get(toHex(k)) as Uint8Array])),
    })
    expect(r.rejected).toBe(1)
    expect(r.applied).toBe(next.length - 1)
    expect(r.missing.map(c => toHex(c.id))).toEqual([toHex(liar!.target.id)])
    expect(subscriber.blobs.has(toHex(liar!.target.id))).toBe(false)
    expect(reports).toHaveLength(1)
  })
})
