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
  return manifestDeltaBases(prev, next)(index)
}

/**
 * manifestDeltaBase for many targets of the same two lists: offsets are summed once and each window found by
 * binary search, so a list of n chunks costs O(n log n) instead of O(n²) (a 185 MB image cut at 16 KiB has
 * 11,000 chunks: the publisher spent a third of a second on the windows alone). Same windows, chunk for chunk.
 */
export function manifestDeltaBases (prev: SizedChunk[], next: SizedChunk[]): (index: number) => SizedChunk[] {
  const prevEnds = new Float64Array(prev.length)
  let prevSum = 0
  for (let j = 0; j < prev.length; j++) { prevSum += (prev[j] as SizedChunk).size; prevEnds[j] = prevSum }
  const nextStarts = new Float64Array(next.length)
  let nextSum = 0
  for (let i = 0; i < next.length; i++) { nextStarts[i] = nextSum; nextSum += (next[i] as SizedChunk).size }
  const prevTotal = BigInt(prevSum)
  const nextTotal = BigInt(nextSum)
  return (index: number): SizedChunk[] => {
    const target = next[index]
    if (target === undefined) throw new RangeError(`no manifest chunk ${index}`)
    if (prevTotal === 0n || nextTotal === 0n) return []
    const start = nextStarts[index] as number
    // integer scaling: the same window on every platform, whatever the manifest size
    const from = Number(BigInt(start) * prevTotal / nextTotal) - MANIFEST_DELTA_MARGIN
    const to = Number(BigInt(start + target.size) * prevTotal / nextTotal) + MANIFEST_DELTA_MARGIN
    // chunk j overlaps [from, to) iff end_j > from and start_j < to; both bounds are monotonic in j
    const lo = firstIndex(prev.length, j => (prevEnds[j] as number) > from)
    const hi = firstIndex(prev.length, j => (prevEnds[j] as number) - (prev[j] as SizedChunk).size >= to)
    return lo < hi ? prev.slice(lo, hi) : []
  }
}

/** The first j in [0, n) for which `holds` is true (n if none), `holds` being false then true along j. */
function firstIndex (n: number, holds: (j: number) => boolean): number {
  let lo = 0
  let hi = n
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (holds(mid)) hi = mid
    else lo = mid + 1
  }
  return lo
}
