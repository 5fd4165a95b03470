import type { PlacedChunk } from '../store/types.js'

// Splitting one large file across threads without changing a single boundary. Both algorithms have the
// property that the next cut depends only on where the previous cut was (the cutter state is reset at a
// cut), so cutting from an arbitrary offset s yields a chain that, once it shares one cut with the true
// chain, is identical to it from there on. Segment k is cut from its start s_k; segment k-1 reads OVERLAP
// bytes past s_k, and the first cut the two chains share stitches them together. In practice the chains meet
// within one or two chunks (measured ≤ 180 KiB on random data); if they do not meet within the overlap,
// the segment is redone from the last true cut, which costs time but never correctness.

export interface Segment {
  start: number
  /** Exclusive; undefined for the last segment, which reads to end of file. */
  end?: number
}

/** Bytes segment k-1 reads past the start of segment k: 4 max-size chunks leave plenty of room to meet. */
export function overlapBytes (maxSize: number): number {
  return 4 * maxSize
}

export function planSegments (fileSize: number, count: number, maxSize: number): Segment[] {
  const n = Math.max(1, Math.min(count, Math.floor(fileSize / (4 * overlapBytes(maxSize)))))
  const step = Math.ceil(fileSize / n)
  const segments: Segment[] = []
  for (let k = 0; k < n; k++) {
    const start = k * step
    const last = k === n - 1
    segments.push(last ? { start } : { start, end: Math.min(fileSize, (k + 1) * step + overlapBytes(maxSize)) })
  }
  return segments
}

/**
 * Appends `next` (a chain cut from some offset ≥ the start of `trueChain`'s last segment) to `trueChain`
 * (a prefix of the file's true chunk list). Returns undefined if the chains do not meet: the caller then
 * re-cuts from `endOf(trueChain)`.
 */
export function stitch (trueChain: PlacedChunk[], next: PlacedChunk[]): PlacedChunk[] | undefined {
  if (next.length === 0) return undefined
  const nextIndexByOffset = new Map<number, number>()
  next.forEach((c, i) => nextIndexByOffset.set(c.offset, i))
  const from = next[0]!.offset
  for (let i = 0; i <= trueChain.length; i++) {
    const cut = i < trueChain.length ? trueChain[i]!.offset : endOf(trueChain)
    if (cut < from) continue
    const j = nextIndexByOffset.get(cut)
    if (j !== undefined) return trueChain.slice(0, i).concat(next.slice(j))
  }
  return undefined
}

export function endOf (chunks: PlacedChunk[]): number {
  const last = chunks[chunks.length - 1]
  return last === undefined ? 0 : last.offset + last.size
}
