import type { ChunkingParams } from '../../protocol/manifest.js'
import type { SerializedError } from '../core/workers.js'
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import type { PlacedChunk } from '../store/types.js'

// Messages between ChunkerPool and its workers. Results travel as two transferable buffers (sizes and the
// concatenated 32-byte ids) instead of an array of objects: no structured-clone walk, no copy of the ids.

export interface ChunkJobRequest {
  type: 'chunk'
  id: number
  path: string
  params: ChunkingParams
  start?: number
  end?: number
  /** The file is sparse at the source: all-zero chunks are holes (ChunkHasher). */
  sparse?: boolean
}

/**
 * Check that bytes [start, …) of a file hash to these chunks (the scan cache's list for a file whose ctime
 * alone changed), instead of cutting it again. `checkEnd`: the file must end after the last chunk.
 */
export interface VerifyJobRequest {
  type: 'verify'
  id: number
  path: string
  start: number
  sizes: Uint32Array<ArrayBuffer>
  ids: Uint8Array<ArrayBuffer>
  checkEnd: boolean
}

export interface AbortJobRequest {
  type: 'abort'
  id: number
}

export type JobRequest = ChunkJobRequest | VerifyJobRequest
export type WorkerRequest = JobRequest | AbortJobRequest

export type WorkerResponse =
  | { type: 'done', id: number, start: number, sizes: Uint32Array, ids: Uint8Array }
  | { type: 'verified', id: number, match: boolean }
  | { type: 'failed', id: number, error: SerializedError }

/** A job's successful answer. */
export type JobResult = Exclude<WorkerResponse, { type: 'failed' }>

export function packChunks (chunks: ReadonlyArray<{ id: Uint8Array, size: number }>): { sizes: Uint32Array<ArrayBuffer>, ids: Uint8Array<ArrayBuffer> } {
  const sizes = new Uint32Array(chunks.length)
  const ids = new Uint8Array(chunks.length * CHUNK_ID_BYTES)
  chunks.forEach((c, i) => { sizes[i] = c.size; ids.set(c.id, i * CHUNK_ID_BYTES) })
  return { sizes, ids }
}

/** Ids become Buffer views into the one transferred buffer (32 bytes per chunk, no copy). */
export function unpackChunks (start: number, sizes: Uint32Array, ids: Uint8Array): PlacedChunk[] {
  const chunks: PlacedChunk[] = new Array(sizes.length)
  let offset = start
  for (let i = 0; i < sizes.length; i++) {
    const size = sizes[i]!
    chunks[i] = { id: Buffer.from(ids.buffer, ids.byteOffset + i * CHUNK_ID_BYTES, CHUNK_ID_BYTES), offset, size }
    offset += size
  }
  return chunks
}
