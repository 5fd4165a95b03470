import { randomBytes } from 'node:crypto'
import * as crypto from 'node:crypto'
import { describe, expect, it, vi } from 'vitest'
import { chunkIdOf, verifyChunkOnce, verifyReceivedChunk } from '../../protocol/chunk-id.js'
import { ChunkHashMismatchError } from '../../protocol/errors.js'

// A received chunk is hashed once: where it arrives (verifyReceivedChunk), not again where it is written
// (verifyChunkOnce); anything else is hashed.

vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>()
  return { ...real, createHash: vi.fn(real.createHash) }
})

describe('hashing a received chunk once', () => {
  it('takes the arrival check for the very same bytes and id, and hashes anything else', () => {
    const hashes = vi.mocked(crypto.createHash)
    const bytes = randomBytes(4096)
    const id = chunkIdOf(bytes)
    verifyReceivedChunk(id, bytes)
    hashes.mockClear()
    verifyChunkOnce(id, bytes)
    expect(hashes).not.toHaveBeenCalled()
    // a copy of the bytes, or a view of them, is another array: hashed
    verifyChunkOnce(id, Buffer.from(bytes))
    verifyChunkOnce(id, bytes.subarray(0))
    expect(hashes).toHaveBeenCalledTimes(2)
    // the same bytes claimed as another chunk are hashed, and refused
    expect(() => verifyChunkOnce(chunkIdOf(Buffer.from('other')), bytes)).toThrow(ChunkHashMismatchError)
  })

  it('marks nothing that failed its arrival check', () => {
    const bytes = randomBytes(1000)
    const wrong = chunkIdOf(Buffer.from('not these bytes'))
    expect(() => verifyReceivedChunk(wrong, bytes)).toThrow(ChunkHashMismatchError)
    expect(() => verifyChunkOnce(wrong, bytes)).toThrow(ChunkHashMismatchError)
  })
})
