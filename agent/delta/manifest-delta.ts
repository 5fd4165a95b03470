// Manifest chunks by delta. A new version's manifest differs from the previous one mostly in place — new
// mtimes, the chunk ids of changed files, a few entries in or out — yet each of its chunks changes as soon as
// one entry in it does, so a subscriber would fetch nearly the whole manifest again (on a source tree whose
// release tarball stamps every file, all of it). The publisher computes, once per version, a delta of each new
// manifest chunk against a window of the previous manifest (protocol/manifest-delta.ts), stored and served
// like small-file deltas (`/deltamesh/deltas/1.0.0`, keyed by content); a subscriber holding the previous
// manifest rebuilds the chunk and checks its hash, and fetches plainly whatever did not verify.
import { toHex } from '../../protocol/chunk-id.js'
import { applyDeltaVerified, deltaKeyOf, encodeDelta } from '../../protocol/delta.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { deltaBases } from '../../protocol/manifest-delta.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { Catalog } from '../store/types.js'
import type { Logger } from '../core/log.js'

/** A delta is kept only if it is at most this share of its target chunk (as for small files). */
const KEEP_RATIO = 0.5

/**
 * A new chunk this close to a shared one counts as at the edge of its run. Measured on the bench's ISO (1,409
 * new 16 KiB chunks, every one tried: 22.90 MB left to send): only the neighbours, 89 tried and 23.00 MB;
 * within 2, 93 and 22.96; within 4, 103 and 22.91.
 */
const EDGE_REACH = 4

export interface Pair {
  target: ChunkRef
  base: ChunkRef[]
  key: Uint8Array
  /** Within EDGE_REACH chunks of one both lists share: likely part old bytes, worth a try whatever the run's record. */
  atEdge: boolean
}

/**
 * New chunks of `next` (absent from `prev`) with the base and key of their delta, in `next`'s order; `atEdge`
 * tells a chunk near a shared one from one deep inside a run of new chunks.
 * Used for manifest chunks and for the chunks of large files alike (protocol/manifest-delta.ts deltaBases).
 */
export function deltaPairs (prev: ChunkRef[], next: ChunkRef[]): Pair[] {
  const had = new Set(prev.map(c => toHex(c.id)))
  const hex = next.map(c => toHex(c.id))
  // distance from each chunk of next to the nearest shared one before it and after it
  const before: number[] = []
  for (let i = 0, last = -Infinity; i < next.length; i++) { before.push(i - last); if (had.has(hex[i] as string)) last = i }
  const after: number[] = new Array<number>(next.length)
  for (let i = next.length - 1, last = Infinity; i >= 0; i--) { after[i] = last - i; if (had.has(hex[i] as string)) last = i }
  const bases = deltaBases(prev, next)
  const out: Pair[] = []
  const seen = new Set<string>()
  for (const [i, target] of next.entries()) {
    const h = hex[i] as string
    if (had.has(h) || seen.has(h)) continue
    seen.add(h)
    const base = bases.get(i)
    if (base === undefined) continue
    const atEdge = Math.min(before[i] as number, after[i] as number) <= EDGE_REACH
    out.push({ target, base, key: deltaKeyOf(base.map(c => c.id), [target.id]), atEdge })
  }
  return out
}

async function blobs (catalog: Pick<Catalog, 'getBlob'>, chunks: ChunkRef[]): Promise<Buffer | undefined> {
  const parts: Uint8Array[] = []
  for (const c of chunks) {
    const b = await catalog.getBlob(c.id)
    if (b === undefined || b.byteLength !== c.size) return undefined
    parts.push(b)
  }
  return Buffer.concat(parts)
}

export interface ManifestDeltaStats { candidates: number, stored: number, targetBytes: number, deltaBytes: number }

/** Publisher: deltas of the new manifest's chunks against the previous manifest (both in the catalog). */
export async function computeManifestDeltas (catalog: Pick<Catalog, 'getBlob' | 'putDelta'>, prev: ChunkRef[], next: ChunkRef[], signal?: AbortSignal): Promise<ManifestDeltaStats> {
  const stats: ManifestDeltaStats = { candidates: 0, stored: 0, targetBytes: 0, deltaBytes: 0 }
  for (const p of deltaPairs(prev, next)) {
    signal?.throwIfAborted()
    stats.candidates++
    const base = await blobs(catalog, p.base)
    const target = await blobs(catalog, [p.target])
    if (base === undefined || target === undefined) continue
    const delta = encodeDelta(base, target)
    if (delta.byteLength > target.byteLength * KEEP_RATIO) continue
    await catalog.putDelta(p.key, delta)
    stats.stored++
    stats.targetBytes += target.byteLength
    stats.deltaBytes += delta.byteLength
  }
  return stats
}

export interface ManifestViaDeltasOptions {
  prev: ChunkRef[]
  next: ChunkRef[]
  /** Manifest chunks still missing here. */
  missing: ChunkRef[]
  catalog: Pick<Catalog, 'getBlob' | 'putBlob' | 'putDelta'>
  fetchDeltas: (keys: Uint8Array[], signal: AbortSignal) => Promise<Map<string, Uint8Array>>
  onBadDelta?: (reason: string) => void
  log: Logger
  signal: AbortSignal
}

export interface ManifestViaDeltasResult { asked: number, applied: number, rejected: number, deltaBytes: number, chunkBytes: number, missing: ChunkRef[] }

/**
 * Subscriber: rebuilds missing manifest chunks from the previous manifest and deltas asked of a holder;
 * each rebuilt chunk must hash to its id before it is stored. Returns what is still missing (fetch it).
 */
export async function manifestViaDeltas (o: ManifestViaDeltasOptions): Promise<ManifestViaDeltasResult> {
  const wanted = new Set(o.missing.map(c => toHex(c.id)))
  const pairs = deltaPairs(o.prev, o.next).filter(p => wanted.has(toHex(p.target.id)))
  const result: ManifestViaDeltasResult = { asked: pairs.length, applied: 0, rejected: 0, deltaBytes: 0, chunkBytes: 0, missing: o.missing }
  if (pairs.length === 0) return result
  let deltas: Map<string, Uint8Array>
  try {
    deltas = await o.fetchDeltas(pairs.map(p => p.key), o.signal)
  } catch (err) {
    o.signal.throwIfAborted()
    o.log.info({ err }, 'no manifest deltas from the peer asked; fetching the manifest plainly')
    return result
  }
  for (const p of pairs) {
    const delta = deltas.get(toHex(p.key))
    if (delta === undefined) continue
    const base = await blobs(o.catalog, p.base)
    if (base === undefined) continue
    try {
      const rebuilt = applyDeltaVerified(base, delta, [p.target])
      await o.catalog.putBlob(p.target.id, rebuilt)
    } catch (err) {
      if (!(err instanceof InvalidMessageError)) throw err
      result.rejected++
      o.log.warn({ chunk: toHex(p.target.id), reason: err.message }, 'manifest delta rejected; the chunk is fetched plainly')
      o.onBadDelta?.(`bad manifest delta: ${err.message}`)
      continue
    }
    await o.catalog.putDelta(p.key, delta) // verified: this site can serve it too
    wanted.delete(toHex(p.target.id))
    result.applied++
    result.deltaBytes += delta.byteLength
    result.chunkBytes += p.target.size
  }
  result.missing = o.missing.filter(c => wanted.has(toHex(c.id)))
  return result
}
