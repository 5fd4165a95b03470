// A few chunks from whichever connected peer has them, outside any version sync (verify --repair): every peer
// is asked as if it held everything, a DONT_HAVE steers the request to the next, and the fetch ends once every
// chunk arrived or no peer is left to ask — never waiting for a peer that might turn up.
import type { ChunkId } from '../../protocol/chunk-id.js'
import { pumpChunks, type FetchFn } from './chunk-pump.js'
import { SwarmScheduler, type WantedChunk } from './swarm-scheduler.js'

/** How often the fetch checks whether any peer is left to ask. */
const GIVE_UP_CHECK_MS = 250

export interface FetchAnyOptions {
  selfId: string
  fetch: FetchFn
  peers: string[]
  wanted: WantedChunk[]
  /** Stores a verified chunk. */
  onChunk: (id: ChunkId, bytes: Uint8Array) => Promise<void>
  onBadChunk?: (peerId: string, reason: string) => void
  windowBytes: number
  signal?: AbortSignal
}

/** Resolves when every wanted chunk was delivered or none of the rest can be had; rejects only on abort or a failed onChunk. */
export async function fetchFromAny (o: FetchAnyOptions): Promise<void> {
  const scheduler = new SwarmScheduler({ selfId: o.selfId, windowBytes: o.windowBytes, ownerGraceMs: 0, ownerStallMs: 0, cooperative: false })
  scheduler.setNeeded(o.wanted)
  for (const p of o.peers) scheduler.setPeer(p, true)
  const giveUp = new AbortController()
  const signal = o.signal === undefined ? giveUp.signal : AbortSignal.any([o.signal, giveUp.signal])
  const check = setInterval(() => { if (scheduler.unreachable() !== undefined) giveUp.abort(new Error('no peer has the rest')) }, GIVE_UP_CHECK_MS)
  try {
    await pumpChunks({
      scheduler,
      fetch: o.fetch,
      signal,
      onChunk: async (id, bytes) => { await o.onChunk(id, bytes) },
      onBadChunk: (peerId, failure) => o.onBadChunk?.(peerId, failure.error?.message ?? 'hash mismatch'),
    })
  } catch (err) {
    if (o.signal?.aborted === true || !giveUp.signal.aborted) throw err
  } finally {
    clearInterval(check)
  }
}
