// The publisher's side of signature deltas (protocol/signature-delta.ts): when it publishes a version, it
// records the block signatures of the chunks of every new or changed small file, so that the next version can
// get deltas against them even if the source is then edited in place (the bytes overwritten before that
// publish reads them). Signatures live while their chunk may be a delta base: computeDeltas forgets those of
// the files the next version replaced or removed (forgetSignatures).
import { join } from 'node:path'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import { SIG_BLOCK, signatureOf } from '../../protocol/signature-delta.js'
import type { SignatureStore } from '../store/types.js'
import { isLarge } from './chunk-deltas.js'
import { hasHole, readFileVerified } from './read-chunks.js'

export interface SignatureStats { files: number, chunks: number, bytes: number, unreadable: number, ms: number }

/** Files under this size get no signatures: a delta could save at most a block or two of them. */
const MIN_FILE_BYTES = 4 * SIG_BLOCK

/** Signatures deleted in one write. */
const FORGET_BATCH = 1024
/** Files whose chunks are looked up in one database read and whose signatures are stored in one write. */
const SIGN_BATCH = 64
/** Files of a batch read at once (each at most MAX_DELTA_TARGET_BYTES: bounds the memory). */
const SIGN_READS = 8

type SignedFile = [path: string, file: { size: number, chunks: ChunkRef[] }]

/**
 * Stores the signatures of the chunks of `files` (paths relative to `source`: the files this publish chunked)
 * that have none yet. Each file is read once, as a whole (small files only), and must still hash to the chunks
 * just published; a file changed since is skipped (the next publish re-reads it anyway). Files go in batches:
 * one database read tells which chunks lack a signature, several files are read at once, one write stores
 * the batch (per file, a read, a lookup and a write one after the other cost ~0.2 ms: a third of a first publish
 * of small files).
 */
export async function storeSignatures (o: { source: string, files: Map<string, { size: number, chunks: ChunkRef[] }>, catalog: Pick<SignatureStore, 'getSignatures' | 'putSignatures'>, signal?: AbortSignal }): Promise<SignatureStats> {
  const started = Date.now()
  const stats: SignatureStats = { files: 0, chunks: 0, bytes: 0, unreadable: 0, ms: 0 }
  let batch: SignedFile[] = []
  for (const [path, file] of o.files) {
    o.signal?.throwIfAborted()
    // a sparse file is no delta base (read-chunks.ts hasHole)
    if (isLarge(file.size) || file.size < MIN_FILE_BYTES || hasHole(file.chunks)) continue
    batch.push([path, file])
    if (batch.length >= SIGN_BATCH) { await signBatch(batch, o, stats); batch = [] }
  }
  await signBatch(batch, o, stats)
  stats.ms = Date.now() - started
  return stats
}

async function signBatch (batch: SignedFile[], o: { source: string, catalog: Pick<SignatureStore, 'getSignatures' | 'putSignatures'>, signal?: AbortSignal }, stats: SignatureStats): Promise<void> {
  const ids = batch.flatMap(([, file]) => file.chunks.filter(c => c.size >= SIG_BLOCK).map(c => c.id))
  if (ids.length === 0) return
  const stored = await o.catalog.getSignatures(ids)
  // per file, the chunks to sign: no signature yet, and not already taken by an earlier file of the batch
  const taken = new Set<string>()
  let k = 0
  const todo = batch.map(([path, file]) => {
    const chunks: number[] = []
    for (const [i, c] of file.chunks.entries()) {
      if (c.size < SIG_BLOCK) continue
      const hex = toHex(c.id)
      if (stored[k++] === undefined && !taken.has(hex)) { taken.add(hex); chunks.push(i) }
    }
    return { path, file, chunks }
  }).filter(t => t.chunks.length > 0)
  const signed: Array<[ChunkId, Uint8Array]> = []
  for (let i = 0; i < todo.length; i += SIGN_READS) {
    o.signal?.throwIfAborted()
    // the whole file must still hash to the chunks just published (read-chunks.ts)
    const part = todo.slice(i, i + SIGN_READS)
    const contents = await Promise.all(part.map(async t => await readFileVerified(join(o.source, t.path), t.file.chunks)))
    for (const [j, t] of part.entries()) {
      const bytes = contents[j]
      if (bytes === undefined) { stats.unreadable++; continue }
      stats.files++
      let offset = 0
      const at: number[] = []
      for (const c of t.file.chunks) { at.push(offset); offset += c.size }
      for (const n of t.chunks) {
        const c = t.file.chunks[n] as ChunkRef
        signed.push([c.id, signatureOf(bytes.subarray(at[n] as number, (at[n] as number) + c.size))])
        stats.chunks++
        stats.bytes += c.size
      }
    }
  }
  await o.catalog.putSignatures(signed)
}

/** Forgets the signatures of `chunks` except those in `keep` (hex ids): they can no longer be a delta base. */
export async function forgetSignatures (catalog: Pick<SignatureStore, 'deleteSignatures'>, chunks: Iterable<ChunkId>, keep: Set<string>): Promise<number> {
  let batch: ChunkId[] = []
  let n = 0
  for (const id of chunks) {
    if (keep.has(toHex(id))) continue
    batch.push(id)
    n++
    if (batch.length >= FORGET_BATCH) { await catalog.deleteSignatures(batch); batch = [] }
  }
  await catalog.deleteSignatures(batch)
  return n
}
