// The publisher's side of signature deltas (protocol/signature-delta.ts): when it publishes a version, it
// records the block signatures of the chunks of every new or changed small file, so that the next version can
// get deltas against them even if the source is then edited in place (the bytes overwritten before that
// publish reads them). Signatures live while their chunk may be a delta base: computeDeltas forgets those of
// the files the next version replaced or removed (forgetSignatures).
import { join } from 'node:path'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import { SIG_BLOCK, signatureOf } from '../../protocol/signature-delta.js'
import type { Catalog } from '../store/types.js'
import { isLarge } from './chunk-deltas.js'
import { readFileVerified } from './read-chunks.js'

export interface SignatureStats { files: number, chunks: number, bytes: number, unreadable: number, ms: number }

/** Files under this size get no signatures: a delta could save at most a block or two of them. */
const MIN_FILE_BYTES = 4 * SIG_BLOCK

/**
 * Stores the signatures of the chunks of `files` (paths relative to `source`: the files this publish chunked)
 * that have none yet. Each file is read once, as a whole (small files only), and must still hash to the chunks
 * just published; a file changed since is skipped (the next publish re-reads it anyway).
 */
export async function storeSignatures (o: { source: string, files: Map<string, { size: number, chunks: ChunkRef[] }>, catalog: Pick<Catalog, 'getSignature' | 'putSignature'>, signal?: AbortSignal }): Promise<SignatureStats> {
  const started = Date.now()
  const stats: SignatureStats = { files: 0, chunks: 0, bytes: 0, unreadable: 0, ms: 0 }
  for (const [path, file] of o.files) {
    o.signal?.throwIfAborted()
    if (isLarge(file.size) || file.size < MIN_FILE_BYTES) continue
    const todo: number[] = []
    for (const [i, c] of file.chunks.entries()) if (c.size >= SIG_BLOCK && await o.catalog.getSignature(c.id) === undefined) todo.push(i)
    if (todo.length === 0) continue
    // the whole file must still hash to the chunks just published (read-chunks.ts)
    const bytes = await readFileVerified(join(o.source, path), file.chunks)
    if (bytes === undefined) { stats.unreadable++; continue }
    let offset = 0
    const at: number[] = []
    for (const c of file.chunks) { at.push(offset); offset += c.size }
    stats.files++
    for (const i of todo) {
      const c = file.chunks[i] as ChunkRef
      await o.catalog.putSignature(c.id, signatureOf(bytes.subarray(at[i] as number, (at[i] as number) + c.size)))
      stats.chunks++
      stats.bytes += c.size
    }
  }
  stats.ms = Date.now() - started
  return stats
}

/** Forgets the signatures of `chunks` except those in `keep` (hex ids): they can no longer be a delta base. */
export async function forgetSignatures (catalog: Pick<Catalog, 'deleteSignature'>, chunks: Iterable<ChunkId>, keep: Set<string>): Promise<number> {
  let n = 0
  for (const id of chunks) {
    if (keep.has(toHex(id))) continue
    await catalog.deleteSignature(id)
    n++
  }
  return n
}
