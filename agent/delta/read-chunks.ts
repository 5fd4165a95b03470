// Reading content back through the chunk index, shared by the publisher's delta computation and the
// subscriber's delta phases: every chunk is re-hashed by the index, so a base edited behind our back is
// never used.
import type { ChunkRef } from '../../protocol/manifest.js'
import type { ChunkIndex } from '../store/types.js'

/** A file's bytes from its chunks (each re-hashed by the index), or undefined if any is not readable. */
export async function readAll (index: Pick<ChunkIndex, 'readChunk'>, chunks: ChunkRef[], signal?: AbortSignal): Promise<Buffer | undefined> {
  const parts: Uint8Array[] = []
  for (const c of chunks) {
    const bytes = await index.readChunk(c.id, signal)
    if (bytes === undefined) return undefined
    parts.push(bytes)
  }
  return Buffer.concat(parts)
}
