// Manifest deltas: which part of the previous version's manifest a new manifest chunk's delta starts from.
// Pure: both sides derive the same base from the two roots' chunk lists, so the delta's key
// (deltaKeyOf(base chunk ids, [target chunk id])) needs no message of its own.
//
// Why a window and not the whole previous manifest: manifests are sorted by path and change mostly in
// place (new mtimes, new chunk ids of changed files), so a chunk's content sits at about the same relative
// position in the previous manifest; a window keeps the publisher's cost per chunk bounded (encodeDelta
// indexes its base) on manifests of millions of entries, where the whole would be indexed once per chunk.
import type { ChunkId } from './chunk-id.js'

export interface SizedChunk { id: ChunkId, size: number }

/** Bytes of the previous manifest taken on each side of the target's proportional position. */
export const MANIFEST_DELTA_MARGIN = 64 * 1024

/**
 * The chunks of the previous manifest (`prev`, in order) that the delta of `next[index]` starts from: those
 * overlapping the target's byte range scaled to the previous manifest's length, widened by the margin.
 * Empty when the previous manifest is empty.
 */
export function manifestDeltaBase (prev: SizedChunk[], next: SizedChunk[], index: number): SizedChunk[] {
  const target = next[index]
  if (target === undefined) throw new RangeError(`no manifest chunk ${index}`)
  const prevTotal = BigInt(prev.reduce((n, c) => n + c.size, 0))
  const nextTotal = BigInt(next.reduce((n, c) => n + c.size, 0))
  if (prevTotal === 0n || nextTotal === 0n) return []
  let start = 0
  for (let i = 0; i < index; i++) start += (next[i] as SizedChunk).size
  // integer scaling: the same window on every platform, whatever the manifest size
  const from = Number(BigInt(start) * prevTotal / nextTotal) - MANIFEST_DELTA_MARGIN
  const to = Number(BigInt(start + target.size) * prevTotal / nextTotal) + MANIFEST_DELTA_MARGIN
  const out: SizedChunk[] = []
  let offset = 0
  for (const c of prev) {
    if (offset + c.size > from && offset < to) out.push(c)
    offset += c.size
  }
  return out
}
