import { describe, expect, it } from 'vitest'
import { chunkIdOf, type ChunkId } from '../../protocol/chunk-id.js'
import { pumpChunks, type FetchFn } from '../../agent/sync/chunk-pump.js'
import { SwarmScheduler } from '../../agent/sync/swarm-scheduler.js'

// pumpChunks resolves only when every write it started has settled: the caller finalizes right after, and a
// write still running then (a chunk delivered twice) made finalize() throw on a loaded machine.

describe('pumpChunks', () => {
  it('waits for a second, slower write of a chunk delivered twice before resolving', async () => {
    const bytes = Buffer.from('one chunk')
    const id = chunkIdOf(bytes)
    const scheduler = new SwarmScheduler({ cooperative: false, selfId: 'self', windowBytes: 1 << 20, ownerGraceMs: 10, ownerStallMs: 10 })
    scheduler.setPeer('origin', true)
    scheduler.setNeeded([{ id, size: bytes.byteLength }])
    const fetch: FetchFn = async (_peer, wants, options) => {
      // the same block twice before the first write finished, as when a re-request raced the first answer
      await Promise.all([options.onBlock(wants[0]!.id, bytes), options.onBlock(wants[0]!.id, bytes)])
      return { delivered: 2, bytes: 2 * bytes.byteLength, failed: [], wireBytes: 0 } as unknown as Awaited<ReturnType<FetchFn>>
    }
    const running = new Set<number>()
    let writes = 0
    const onChunk = async (_id: ChunkId): Promise<void> => {
      const n = writes++
      running.add(n)
      await new Promise(resolve => setTimeout(resolve, n === 0 ? 20 : 200))
      running.delete(n)
    }
    await pumpChunks({ scheduler, fetch, onChunk, signal: AbortSignal.timeout(5_000), tickMs: 10 })
    expect(writes).toBe(2)
    expect([...running]).toEqual([])
  })
})
