// BLOCKS / DELTA_WANT / DELTA frames and the bounded batch codec: every bound a peer controls is rejected
// with a typed error, and decompression never produces more than the declared size.
import { brotliCompressSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { chunkIdOf } from '../../protocol/chunk-id.js'
import { encodeCanonical } from '../../protocol/codec.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { compressBatch, decompressBatch } from '../../protocol/batch-codec.js'
import { decodeMessage, encodeMessage } from '../../protocol/messages.js'
import { MAX_BATCH_RAW_BYTES, MAX_BLOCKS_PER_BATCH, MAX_DELTA_TARGET_BYTES, MAX_DELTA_WANTS } from '../../protocol/wire-limits.js'

const id = (n: number): Uint8Array => chunkIdOf(Buffer.from(`chunk ${n}`))

describe('BLOCKS frames', () => {
  it('round-trips and inflates to the declared chunks', () => {
    const parts = [Buffer.alloc(5000, 1), Buffer.from('hello world '.repeat(300))]
    const payload = compressBatch(Buffer.concat(parts))
    const msg = { type: 'BLOCKS' as const, codec: 'br' as const, entries: parts.map((p, i) => ({ id: id(i), size: p.byteLength })), payload }
    const back = decodeMessage(encodeMessage(msg))
    expect(back).toEqual(msg)
    if (back.type !== 'BLOCKS') throw new Error('not BLOCKS')
    const raw = decompressBatch(back.codec, back.payload, 5000 + parts[1]!.byteLength)
    expect(Buffer.compare(raw, Buffer.concat(parts))).toBe(0)
  })

  it('rejects unknown codecs, empty and oversize batches, zero or oversize entries, and payloads above the raw total', () => {
    const e = (n: number, size: number): unknown[] => [id(n), size]
    const frame = (codec: unknown, entries: unknown[], payload: Uint8Array): Uint8Array => encodeCanonical(['BLOCKS', codec, entries, payload])
    const small = new Uint8Array(10)
    const cases: Array<[Uint8Array, RegExp]> = [
      [frame('zstd', [e(1, 100)], small), /unknown codec/],
      [frame('br', [], small), /at least 1/],
      [frame('br', Array.from({ length: MAX_BLOCKS_PER_BATCH + 1 }, (_, i) => e(i, 10)), small), /limit/],
      [frame('br', [e(1, 0)], small), /outside/],
      [frame('br', [e(1, MAX_BATCH_RAW_BYTES), e(2, 1)], small), /BLOCKS raw bytes/],
      [frame('br', [e(1, 5)], small), /limit 5/],
      [frame('br', [[id(1).subarray(1), 10]], small), /bytes, expected 32/],
      [encodeCanonical(['BLOCKS', 'br', [e(1, 100)]]), /fields/],
    ]
    for (const [bytes, message] of cases) {
      expect(() => decodeMessage(bytes)).toThrow(InvalidMessageError)
      expect(() => decodeMessage(bytes)).toThrow(message)
    }
  })

  it('decompression stops at the declared size: a bomb, a short payload and garbage are DecompressionErrors', () => {
    const bomb = brotliCompressSync(Buffer.alloc(8 * 1024 * 1024))
    expect(bomb.byteLength).toBeLessThan(100)
    const catchName = (f: () => unknown): string => { try { f(); return 'no error' } catch (err) { return (err as Error).name } }
    expect(catchName(() => decompressBatch('br', bomb, 1000))).toBe('DecompressionError')
    expect(catchName(() => decompressBatch('br', compressBatch(Buffer.alloc(999, 7)), 1000))).toBe('DecompressionError')
    expect(catchName(() => decompressBatch('br', randomBytes(200), 1000))).toBe('DecompressionError')
    expect(catchName(() => decompressBatch('br', bomb, MAX_BATCH_RAW_BYTES + 1))).toBe('DecompressionError')
    expect(decompressBatch('br', compressBatch(Buffer.alloc(1000, 7)), 1000).byteLength).toBe(1000)
  })

  it('property: a corrupted BLOCKS frame or payload never throws anything but InvalidMessageError', () => {
    const raw = Buffer.from('some text that compresses, some text that compresses, '.repeat(40))
    const good = encodeMessage({ type: 'BLOCKS', codec: 'br', entries: [{ id: id(1), size: 1000 }, { id: id(2), size: raw.byteLength - 1000 }], payload: compressBatch(raw) })
    fc.assert(fc.property(fc.nat(good.byteLength - 1), fc.integer({ min: 1, max: 255 }), (at, xor) => {
      const bad = Buffer.from(good)
      bad[at] = (bad[at] ?? 0) ^ xor
      try {
        const msg = decodeMessage(bad)
        if (msg.type === 'BLOCKS') decompressBatch(msg.codec, msg.payload, msg.entries.reduce((n, x) => n + x.size, 0))
      } catch (err) {
        if (!(err instanceof InvalidMessageError)) throw err
      }
    }), { numRuns: 500 })
  })
})

describe('DELTA_WANT / DELTA frames', () => {
  it('round-trip, and bound keys and delta size', () => {
    expect(decodeMessage(encodeMessage({ type: 'DELTA_WANT', keys: [id(1), id(2)] }))).toEqual({ type: 'DELTA_WANT', keys: [id(1), id(2)] })
    expect(decodeMessage(encodeMessage({ type: 'DELTA', key: id(1), bytes: Buffer.alloc(3, 9) }))).toEqual({ type: 'DELTA', key: id(1), bytes: Buffer.alloc(3, 9) })
    expect(() => decodeMessage(encodeCanonical(['DELTA_WANT', []]))).toThrow(/at least 1/)
    expect(() => decodeMessage(encodeCanonical(['DELTA_WANT', Array.from({ length: MAX_DELTA_WANTS + 1 }, (_, i) => id(i))]))).toThrow(/limit/)
    expect(() => decodeMessage(encodeCanonical(['DELTA', id(1), new Uint8Array(MAX_DELTA_TARGET_BYTES + 1)]))).toThrow(/limit/)
    expect(() => decodeMessage(encodeCanonical(['DELTA', new Uint8Array(31), new Uint8Array(1)]))).toThrow(InvalidMessageError)
    expect(decodeMessage(encodeMessage({ type: 'DELTA_NONE', count: 3 }))).toEqual({ type: 'DELTA_NONE', count: 3 })
    for (const bad of [0, -1, 1.5, MAX_DELTA_WANTS + 1, '3']) expect(() => decodeMessage(encodeCanonical(['DELTA_NONE', bad]))).toThrow(InvalidMessageError)
  })
})
