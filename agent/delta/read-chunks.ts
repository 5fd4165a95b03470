// Reading content back through the chunk index (or a file, checked against its chunks), shared by the publisher's delta computation and the
// subscriber's delta phases: every chunk is re-hashed by the index, so a base edited behind our back is
// never used.
import { constants as fsConstants } from 'node:fs'
import { open } from 'node:fs/promises'
import { chunkIdOf, idsEqual } from '../../protocol/chunk-id.js'
import { isHoleChunk, type ChunkRef } from '../../protocol/manifest.js'
import type { ChunkIndex } from '../store/types.js'
import { fsPath } from '../../protocol/paths.js'

/**
 * True when a chunk list holds a hole (a sparse file): such a file is no delta base or target. Its holes are
 * stored nowhere to read back, and rebuilding zeros from a delta would write them as data.
 */
export function hasHole (chunks: ReadonlyArray<{ id: Uint8Array }>): boolean {
  return chunks.some(c => isHoleChunk(c.id))
}

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

/**
 * A file read whole from `path` if it is exactly the content `chunks` describe (size and every chunk's
 * hash), else undefined. The path is our own record, but the directory is the operator's and may have
 * changed since: nothing is trusted without the hashes, and no more than the expected size is read.
 */
export async function readFileVerified (path: string, chunks: ChunkRef[]): Promise<Buffer | undefined> {
  const size = chunks.reduce((n, c) => n + c.size, 0)
  let fh
  try {
    fh = await open(fsPath(path), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW)
  } catch {
    return undefined // gone or replaced by a symlink since: no base, plain chunks serve this file
  }
  try {
    // one byte more than expected tells a longer file from the right one
    const buf = Buffer.allocUnsafe(size + 1)
    let got = 0
    for (;;) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got)
      if (bytesRead === 0) break
      got += bytesRead
      if (got === buf.length) break
    }
    if (got !== size) return undefined
    let offset = 0
    for (const c of chunks) {
      if (!idsEqual(chunkIdOf(buf.subarray(offset, offset + c.size)), c.id)) return undefined
      offset += c.size
    }
    return buf.subarray(0, size)
  } catch {
    return undefined // unreadable now (truncated, replaced, I/O error): no base from this file
  } finally {
    await fh.close()
  }
}
