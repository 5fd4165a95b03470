import type { ChunkingParams } from '../../protocol/manifest.js'

/**
 * Finds content-defined cut points in a byte stream fed in arbitrary pieces. The cut points depend only on
 * the bytes, never on how they were split into `push` calls, so a file read with a 1 MiB buffer and the same
 * bytes chunked in memory give identical chunks.
 */
export interface Cutter {
  readonly params: ChunkingParams
  /** Feeds the next bytes of the stream; returns the lengths of the chunks completed so far within them. */
  push (bytes: Uint8Array): number[]
  /** Ends the stream: the length of the trailing partial chunk (possibly below minSize), 0 if there is none. */
  finish (): number
}
