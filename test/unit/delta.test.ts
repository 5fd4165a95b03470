// protocol/delta.ts and the subscriber's delta phase: deltas rebuild their target exactly; a hostile or
// wrong delta is rejected with a typed error, nothing of it is filled, and its chunks stay planned.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { brotliCompressSync } from 'node:zlib'
import { chunkIdOf, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { encodeCanonical } from '../../protocol/codec.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { applyDelta, applyDeltaVerified, deltaKeyOf, encodeDelta } from '../../protocol/delta.js'
import { encodeDeltaFromSignatures, SIG_BLOCK, SignatureError, signatureBytes, signatureOf } from '../../protocol/signature-delta.js'
import { pseudoRandomBytes } from '../../agent/demo/tree-gen.js'
import type { FileEntry, ManifestEntry } from '../../protocol/manifest.js'
import { runDeltaPhase } from '../../agent/sync/delta-phase.js'
import { createLogger } from '../../agent/core/log.js'

const text = (n: number, seed = 1): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => `line ${(i * 7919 + seed) % 10007} of some source file\n`).join(''))

describe('deltas against block signatures (the base bytes are gone)', () => {
  // a base cut in three "chunks", each known only by its size and signature
  const cut = (b: Buffer, sizes: number[]): Array<{ size: number, signature: Uint8Array }> => {
    let at = 0
    return sizes.map(size => { const part = b.subarray(at, at + size); at += size; return { size, signature: signatureOf(part) } })
  }

  it('matches the unchanged blocks of random data edited in place, at any offset, across chunk boundaries', () => {
    const base = pseudoRandomBytes('sig base', 200_000)
    const sizes = [70_001, 64_999, 65_000]
    // a 4 KiB patch in the middle and 300 bytes inserted near the start: everything after shifts
    const target = Buffer.concat([base.subarray(0, 5_000), pseudoRandomBytes('ins', 300), base.subarray(5_000, 100_000), pseudoRandomBytes('patch', 4096), base.subarray(104_096)])
    const delta = encodeDeltaFromSignatures(cut(base, sizes), target, target.byteLength)
    expect(delta).toBeDefined()
    // literals: the patch and the insertion, plus at most a block on each side of each, and a tail per chunk
    expect(delta!.byteLength).toBeLessThan(300 + 4096 + 4 * SIG_BLOCK + 3 * SIG_BLOCK + 200)
    expect(Buffer.compare(applyDelta(base, delta!, target.byteLength), target)).toBe(0)
  })

  it('property: whatever the edit, a returned delta rebuilds the target from the real base', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 6000 }), fc.uint8Array({ maxLength: 2000 }), fc.nat(6000), fc.integer({ min: 1, max: 7000 }), (seed, insert, at, split) => {
      const base = pseudoRandomBytes(`p${seed}`, 7000)
      const target = Buffer.concat([base.subarray(0, at), insert, base.subarray(Math.min(7000, at + insert.byteLength))])
      const sizes = split < 7000 ? [split, 7000 - split] : [7000]
      const delta = encodeDeltaFromSignatures(cut(base, sizes), target, 2 * target.byteLength + 100)
      if (delta !== undefined) expect(Buffer.compare(applyDelta(base, delta, target.byteLength), target)).toBe(0)
    }), { numRuns: 150 })
  })

  it('extends a run across chunks that end on a block boundary, and matches blocks that repeat in the base', () => {
    // chunks of whole blocks: the blocks of one chunk run straight on into the next chunk's
    const random = pseudoRandomBytes('aligned', 6 * SIG_BLOCK)
    const repeated = Buffer.alloc(4 * SIG_BLOCK, 'abcdefgh') // four blocks with one weak and strong hash
    const base = Buffer.concat([random, repeated])
    const target = Buffer.concat([pseudoRandomBytes('head', 100), base])
    const delta = encodeDeltaFromSignatures(cut(base, [2 * SIG_BLOCK, 4 * SIG_BLOCK, 4 * SIG_BLOCK]), target, target.byteLength)
    expect(delta).toBeDefined()
    expect(Buffer.compare(applyDelta(base, delta!, target.byteLength), target)).toBe(0)
    // one copy of all ten blocks after the 100 literal bytes, not a copy per chunk or per block
    expect(delta!.byteLength).toBeLessThan(160)
  })

  it('gives up over the limit or without a single match, and refuses a signature of the wrong length', () => {
    const base = pseudoRandomBytes('sig base 2', 50_000)
    const other = pseudoRandomBytes('unrelated', 50_000)
    expect(encodeDeltaFromSignatures(cut(base, [50_000]), other, 50_000)).toBeUndefined()
    const edited = Buffer.concat([base.subarray(0, 20_000), pseudoRandomBytes('x', 10_000), base.subarray(30_000)])
    expect(encodeDeltaFromSignatures(cut(base, [50_000]), edited, 5_000)).toBeUndefined()
    expect(encodeDeltaFromSignatures(cut(base, [50_000]), edited, 50_000)).toBeDefined()
    expect(signatureBytes(SIG_BLOCK - 1)).toBe(0)
    expect(() => encodeDeltaFromSignatures([{ size: 50_000, signature: new Uint8Array(12) }], edited, 50_000)).toThrow(SignatureError)
  })
})

describe('delta format', () => {
  it('rebuilds an edited file exactly, in a small fraction of its size', () => {
    const base = text(2000)
    const target = Buffer.concat([base.subarray(0, 30_000), Buffer.from('/* a new line */\n'), base.subarray(30_100)])
    const delta = encodeDelta(base, target)
    expect(delta.byteLength).toBeLessThan(200)
    expect(Buffer.compare(applyDelta(base, delta, target.byteLength), target)).toBe(0)
  })

  it('property: any base and target round-trip', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 3000 }), fc.uint8Array({ maxLength: 300 }), fc.nat(3000), (base, insert, at) => {
      const b = Buffer.from(base)
      const target = Buffer.concat([b.subarray(0, at), insert, b.subarray(at)])
      expect(Buffer.compare(applyDelta(b, encodeDelta(b, target), target.byteLength), target)).toBe(0)
    }), { numRuns: 200 })
  })

  it('rejects a wrong size, copies outside the base, ops that overrun, and an inflate bomb', () => {
    const base = text(100)
    const good = encodeDelta(base, base)
    const ops = (raw: Buffer, size: number, opsSize = raw.byteLength): Uint8Array => encodeCanonical(['DLT', 1, size, opsSize, brotliCompressSync(raw)])
    const cases: Array<[Uint8Array, number]> = [
      [good, base.byteLength + 1], // the manifest says another size
      [ops(Buffer.from([0x0b, 0xff, 0x7f]), 5), 5], // copy 5 bytes from offset 16383 of a shorter base
      [ops(Buffer.from([0x14, 1, 2]), 10), 10], // literal of 10 bytes with 2 present
      [ops(Buffer.from([0x08, 1, 2, 3, 4]), 3), 3], // literal longer than the target
      [ops(Buffer.from([0x04, 1, 2]), 3), 3], // rebuilds 2 of 3 bytes
      [encodeCanonical(['DLT', 1, 10, 10, brotliCompressSync(Buffer.alloc(8 * 1024 * 1024))]), 10], // bomb
      [encodeCanonical(['DLT', 2, 10, 10, new Uint8Array(3)]), 10],
      [new Uint8Array([1, 2, 3]), 3],
    ]
    for (const [delta, size] of cases) expect(() => applyDelta(base, delta, size)).toThrow(InvalidMessageError)
  })

  it('property: a corrupted delta never throws anything but InvalidMessageError', () => {
    const base = text(300)
    const target = Buffer.concat([base.subarray(0, 5000), Buffer.from('changed'), base.subarray(5000)])
    const good = encodeDelta(base, target)
    fc.assert(fc.property(fc.nat(good.byteLength - 1), fc.integer({ min: 1, max: 255 }), (at, xor) => {
      const bad = Buffer.from(good)
      bad[at] = (bad[at] ?? 0) ^ xor
      try { applyDelta(base, bad, target.byteLength) } catch (err) { if (!(err instanceof InvalidMessageError)) throw err }
    }), { numRuns: 500 })
  })
})

describe('delta phase', () => {
  const base = text(1500)
  const target = Buffer.concat([base.subarray(0, 20_000), Buffer.from('an edit\n'), base.subarray(20_000)])
  const cut = (b: Buffer): Array<{ id: ChunkId, size: number, bytes: Buffer }> => [b.subarray(0, 16_384), b.subarray(16_384)].map(x => ({ id: chunkIdOf(x), size: x.byteLength, bytes: x }))
  const baseChunks = cut(base)
  const targetChunks = cut(target)
  const entry = (chunks: Array<{ id: ChunkId, size: number }>, size: number): FileEntry => ({ type: 'file', path: 'src/a.c', mode: 0o644, mtimeMs: 0, size, chunks: chunks.map(c => ({ id: c.id, size: c.size })) })
  async function * iter (e: ManifestEntry): AsyncGenerator<ManifestEntry> { yield e }

  async function run (delta: Uint8Array) {
    const missing = new Set(targetChunks.map(c => toHex(c.id)))
    const filled: string[] = []
    const struck: string[] = []
    const stored: string[] = []
    const lacking: string[] = []
    const held = new Map(baseChunks.map(c => [toHex(c.id), c.bytes]))
    const key = deltaKeyOf(baseChunks.map(c => c.id), targetChunks.map(c => c.id))
    const result = await runDeltaPhase({
      missing,
      entries: () => iter(entry(targetChunks, target.byteLength)),
      onLacking: e => lacking.push(e.path),
      previousEntries: () => iter(entry(baseChunks, base.byteLength)),
      index: { readChunk: async (id: ChunkId) => held.get(toHex(id)) },
      catalog: { putDelta: async (k: Uint8Array) => { stored.push(toHex(k)) } },
      fetchDeltas: async (keys) => {
        expect(keys.map(toHex)).toEqual([toHex(key)])
        return { peer: 'origin', deltas: new Map([[toHex(key), delta]]) }
      },
      fill: async (id) => { filled.push(toHex(id)); return true },
      onBadDelta: (peer, reason) => struck.push(`${peer}: ${reason}`),
      log: createLogger({ level: 'error' }),
      signal: AbortSignal.timeout(10_000),
    })
    return { result, missing, filled, struck, stored, lacking }
  }

  it('a good delta fills the changed chunks and takes them out of the plan', async () => {
    const { result, missing, filled, stored, lacking } = await run(encodeDelta(base, target))
    expect(result).toMatchObject({ asked: 1, applied: 1, rejected: 0, chunks: 2 })
    expect(lacking).toEqual(['src/a.c']) // told to the caller in the same pass (its large-file selection)
    expect(missing.size).toBe(0)
    expect(filled.length).toBe(2)
    expect(stored.length).toBe(1)
  })

  it('a delta that does not reproduce the target hashes is rejected: nothing filled, chunks stay planned, peer struck', async () => {
    const wrong = Buffer.from(target)
    wrong[30_000] = 0x21 // right size, wrong content
    const { result, missing, filled, struck, stored } = await run(encodeDelta(base, wrong))
    expect(result).toMatchObject({ asked: 1, received: 1, applied: 0, rejected: 1, chunks: 0 })
    expect(filled).toEqual([])
    expect(missing.size).toBe(2)
    expect(stored).toEqual([])
    expect(struck[0]).toMatch(/^origin: bad delta for src\/a\.c/)
  })
})

describe('applyDeltaVerified', () => {
  it('returns the rebuilt bytes when every chunk hashes to its id, and refuses one that does not', () => {
    const base = Buffer.from('the quick brown fox jumps over the lazy dog '.repeat(200))
    const target = Buffer.concat([base.subarray(0, 4000), Buffer.from('an edit'), base.subarray(4000)])
    const delta = encodeDelta(base, target)
    const chunks = [{ id: chunkIdOf(target.subarray(0, 5000)), size: 5000 }, { id: chunkIdOf(target.subarray(5000)), size: target.byteLength - 5000 }]
    expect(Buffer.from(applyDeltaVerified(base, delta, chunks)).equals(target)).toBe(true)
    const wrong = [chunks[0]!, { id: chunkIdOf(Buffer.from('something else')), size: chunks[1]!.size }]
    expect(() => applyDeltaVerified(base, delta, wrong)).toThrow(InvalidMessageError)
    expect(() => applyDeltaVerified(base, delta, wrong)).toThrow(/at 5000 does not hash/)
  })
})
