// Manifest deltas: which part of the previous version's manifest a new manifest chunk's delta starts from.
// Pure: both sides derive the same base from the two roots' chunk lists, so the delta's key
// (deltaKeyOf(base chunk ids, [target chunk id])) needs no message of its own.
//
// Why a window and not the whole previous manifest: manifests are sorted by path and change mostly in
// place (new mtimes, new chunk ids of changed files), so a chunk's content sits at about the same relative
// position in the previous manifest; a window keeps the publisher's cost per chunk bounded (encodeDelta
// indexes its base) on manifests of millions of entries, where the whole would be indexed once per chunk.
import { toHex, type ChunkId } from './chunk-id.js'
import type { ChunkRef } from './manifest.js'


/** Bytes of the previous manifest taken on each side of the target's proportional position. */
export const MANIFEST_DELTA_MARGIN = 64 * 1024

/**
 * The chunks of the previous manifest (`prev`, in order) that the delta of `next[index]` starts from: those
 * overlapping the target's byte range scaled to the previous manifest's length, widened by the margin.
 * Empty when the previous manifest is empty.
 */
export function manifestDeltaBase (prev: ChunkRef[], next: ChunkRef[], index: number): ChunkRef[] {
  const target = next[index]
  if (target === undefined) throw new RangeError(`no manifest chunk ${index}`)
  const prevTotal = BigInt(prev.reduce((n, c) => n + c.size, 0))
  const nextTotal = BigInt(next.reduce((n, c) => n + c.size, 0))
  if (prevTotal === 0n || nextTotal === 0n) return []
  let start = 0
  for (let i = 0; i < index; i++) start += (next[i] as ChunkRef).size
  // integer scaling: the same window on every platform, whatever the manifest size
  const from = Number(BigInt(start) * prevTotal / nextTotal) - MANIFEST_DELTA_MARGIN
  const to = Number(BigInt(start + target.size) * prevTotal / nextTotal) + MANIFEST_DELTA_MARGIN
  const out: ChunkRef[] = []
  let offset = 0
  for (const c of prev) {
    if (offset + c.size > from && offset < to) out.push(c)
    offset += c.size
  }
  return out
}

/**
 * The base of every new chunk's delta (index in `next` → chunks of `prev`, in prev's order; new chunks
 * without a base are absent). Both sides derive it from the two chunk lists alone.
 *
 * A new chunk sits in a run of new chunks between two chunks both lists share (anchors). Content-defined
 * chunking re-synchronises right after a change, so the bytes that run replaced are the previous list's
 * chunks between the same two anchors (the gap): an edit in place maps the run onto its old content, a
 * boundary chunk (half old bytes, half new) finds its old half next to the anchor, and a pure insertion has
 * an empty gap and no base at all. The target's position within its run is scaled onto the gap, widened by
 * the margin, and kept inside the gap. Why not the whole file's proportional position: an ISO image that grew
 * by 12 % puts that position megabytes from the old content, and 16 KiB windows then never match (measured:
 * 37 of 1,409 new chunks of the bench's ISO paid with proportional windows; with gaps the boundary chunks
 * pay too, 0.5 MB less on the wire). A run at the start or the end of the list has one anchor and its gap
 * runs to that end of `prev`; a run without any, or whose right anchor lies before its left one in `prev`
 * (content moved), falls back to the whole-list proportional window.
 */
export function deltaBases (prev: ChunkRef[], next: ChunkRef[], margin = MANIFEST_DELTA_MARGIN): Map<number, ChunkRef[]> {
  const out = new Map<number, ChunkRef[]>()
  if (prev.length === 0 || next.length === 0) return out
  const positions = new Map<string, number[]>()
  prev.forEach((c, i) => {
    const k = toHex(c.id)
    const list = positions.get(k)
    if (list === undefined) positions.set(k, [i])
    else list.push(i)
  })
  const prevStart: number[] = []
  let offset = 0
  for (const c of prev) { prevStart.push(offset); offset += c.size }
  prevStart.push(offset)
  /** The first position of `id` in prev after `after` (-1: anywhere), or undefined. */
  const positionOf = (id: ChunkId, after: number): number | undefined => {
    const list = positions.get(toHex(id))
    if (list === undefined) return undefined
    let lo = 0
    let hi = list.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((list[mid] as number) > after) hi = mid
      else lo = mid + 1
    }
    return list[lo]
  }
  const nextStart: number[] = []
  offset = 0
  for (const c of next) { nextStart.push(offset); offset += c.size }
  const prevTotal = prevStart[prev.length] as number
  const nextTotal = offset
  /** Chunks of prev in [lo, hi) overlapping bytes [from, to) (binary search: runs and lists can be long). */
  const overlapping = (lo: number, hi: number, from: number, to: number): ChunkRef[] => {
    let a = lo
    let b = hi
    while (a < b) {
      const mid = (a + b) >>> 1
      if ((prevStart[mid + 1] as number) > from) b = mid
      else a = mid + 1
    }
    const base: ChunkRef[] = []
    for (let p = a; p < hi && (prevStart[p] as number) < to; p++) base.push(prev[p] as ChunkRef)
    return base
  }
  /** As manifestDeltaBase(prev, next, k), from the prefix sums. */
  const proportional = (k: number): ChunkRef[] => {
    if (prevTotal === 0 || nextTotal === 0) return []
    const start = nextStart[k] as number
    const from = Number(BigInt(start) * BigInt(prevTotal) / BigInt(nextTotal)) - margin
    const to = Number(BigInt(start + (next[k] as ChunkRef).size) * BigInt(prevTotal) / BigInt(nextTotal)) + margin
    return overlapping(0, prev.length, from, to)
  }
  let i = 0
  let lastAnchor = -1 // position in prev of the most recent shared chunk
  while (i < next.length) {
    const here = positionOf((next[i] as ChunkRef).id, lastAnchor) ?? positionOf((next[i] as ChunkRef).id, -1)
    if (here !== undefined) { lastAnchor = here; i++; continue }
    // a run of new chunks [i, j)
    let j = i
    while (j < next.length && !positions.has(toHex((next[j] as ChunkRef).id))) j++
    const gapFrom = i === 0 ? 0 : lastAnchor + 1
    const right = j < next.length ? positionOf((next[j] as ChunkRef).id, lastAnchor) : prev.length
    const consistent = (i > 0 || j < next.length) && right !== undefined && right >= gapFrom
    const runFrom = nextStart[i] as number
    const runBytes = (j < next.length ? nextStart[j] as number : nextTotal) - runFrom
    for (let k = i; k < j; k++) {
      let base: ChunkRef[]
      if (!consistent) {
        base = proportional(k)
      } else if (right > gapFrom) {
        const gFrom = prevStart[gapFrom] as number
        const gTo = prevStart[right] as number
        const scale = (x: number): number => gFrom + Number(BigInt(x) * BigInt(gTo - gFrom) / BigInt(Math.max(1, runBytes)))
        const at = (nextStart[k] as number) - runFrom
        base = overlapping(gapFrom, right, Math.max(gFrom, scale(at) - margin), Math.min(gTo, scale(at + (next[k] as ChunkRef).size) + margin))
      } else {
        base = []
      }
      if (base.length > 0) out.set(k, base)
    }
    i = j
  }
  return out
}
