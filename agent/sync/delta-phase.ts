// Subscriber side of small-file deltas, between planning and fetching: for each planned file that also
// exists (changed) in the version we hold, derive the delta key from the two chunk lists, ask a complete
// holder for those deltas, rebuild each file from our own copy, and hash every rebuilt chunk against the
// new manifest. Only chunks that verify are filled; a bad or missing delta leaves its chunks in the plan,
// so they are fetched plainly. A verified delta is kept, so this site can serve it to others.
import { applyDeltaVerified, deltaKeyOf } from '../../protocol/delta.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { MAX_DELTA_TARGET_BYTES } from '../../protocol/wire-limits.js'
import type { FileEntry, ManifestEntry } from '../../protocol/manifest.js'
import { hasHole, readAll } from '../delta/read-chunks.js'
import type { Catalog, ChunkIndex } from '../store/types.js'
import type { Logger } from '../core/log.js'

/** Asks one peer for deltas by key; undefined when no peer can be asked. */
export type FetchDeltasFn = (keys: Uint8Array[], signal: AbortSignal) => Promise<{ peer: string, deltas: Map<string, Uint8Array> } | undefined>

export interface DeltaPhaseOptions {
  /** Hex ids of the chunks still missing after planning. */
  missing: Set<string>
  entries: () => AsyncIterable<ManifestEntry>
  /**
   * Every file of the new manifest that lacks a chunk, as the pass over it finds one: the caller's own
   * selection (large files, for chunk deltas) without another pass over a manifest of maybe millions of entries.
   */
  onLacking?: (e: FileEntry) => void
  previousEntries: () => AsyncIterable<ManifestEntry>
  index: Pick<ChunkIndex, 'readChunk'>
  catalog: Pick<Catalog, 'putDelta'>
  fetchDeltas: FetchDeltasFn
  fill: (id: ChunkId, bytes: Uint8Array) => Promise<boolean>
  onBadDelta?: (peer: string, reason: string) => void
  log: Logger
  signal: AbortSignal
}

export interface DeltaPhaseResult { asked: number, received: number, applied: number, rejected: number, deltaBytes: number, chunks: number, chunkBytes: number }

export async function runDeltaPhase (o: DeltaPhaseOptions): Promise<DeltaPhaseResult> {
  const result: DeltaPhaseResult = { asked: 0, received: 0, applied: 0, rejected: 0, deltaBytes: 0, chunks: 0, chunkBytes: 0 }
  const targets = new Map<string, FileEntry>()
  for await (const e of o.entries()) {
    if (e.type !== 'file' || !e.chunks.some(c => o.missing.has(toHex(c.id)))) continue
    o.onLacking?.(e)
    if (e.size <= MAX_DELTA_TARGET_BYTES && !hasHole(e.chunks)) targets.set(e.path, e)
  }
  if (targets.size === 0) return result
  const pairs = new Map<string, { base: FileEntry, target: FileEntry, key: Uint8Array }>()
  for await (const e of o.previousEntries()) {
    const target = targets.get(e.path)
    if (e.type !== 'file' || target === undefined || e.size > MAX_DELTA_TARGET_BYTES || hasHole(e.chunks)) continue
    const key = deltaKeyOf(e.chunks.map(c => c.id), target.chunks.map(c => c.id))
    pairs.set(toHex(key), { base: e, target, key })
  }
  if (pairs.size === 0) return result
  result.asked = pairs.size
  let answer: Awaited<ReturnType<FetchDeltasFn>>
  try {
    answer = await o.fetchDeltas([...pairs.values()].map(p => p.key), o.signal)
  } catch (err) {
    o.log.info({ err }, 'no deltas from the peer asked; fetching plain chunks')
    return result
  }
  if (answer === undefined) return result
  result.received = answer.deltas.size
  for (const [hex, delta] of answer.deltas) {
    o.signal.throwIfAborted()
    const pair = pairs.get(hex)
    if (pair === undefined) continue
    const base = await readAll(o.index, pair.base.chunks, o.signal)
    if (base === undefined) continue
    let rebuilt: Uint8Array
    try {
      rebuilt = applyDeltaVerified(base, delta, pair.target.chunks)
    } catch (err) {
      if (!(err instanceof InvalidMessageError)) throw err
      result.rejected++
      o.log.warn({ peer: answer.peer, path: pair.target.path, reason: err.message }, 'delta rejected; its chunks are fetched plainly')
      o.onBadDelta?.(answer.peer, `bad delta for ${pair.target.path}: ${err.message}`)
      continue
    }
    result.applied++
    result.deltaBytes += delta.byteLength
    let offset = 0
    for (const c of pair.target.chunks) {
      const cHex = toHex(c.id)
      if (o.missing.has(cHex) && await o.fill(c.id, rebuilt.subarray(offset, offset + c.size))) {
        o.missing.delete(cHex)
        result.chunks++
        result.chunkBytes += c.size
      }
      offset += c.size
    }
    await o.catalog.putDelta(pair.key, delta)
  }
  return result
}

