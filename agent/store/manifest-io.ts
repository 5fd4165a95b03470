import { createHash } from 'node:crypto'
import { chunkIdOf, toHex, verifyChunk, type ChunkId } from '../../protocol/chunk-id.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { ManifestReader, decodeRoot, encodeRoot, type ManifestEntry, type ManifestHeader, type ManifestRoot } from '../../protocol/manifest.js'
import type { BlobStore } from './types.js'
import { ManifestBlobMissingError } from './errors.js'

// A manifest lives in the catalog as content-addressed blobs: its chunks, plus the root blob that lists
// them (whose hash the envelope signs). Reading streams it chunk by chunk, so memory is one chunk plus
// one record, whatever the size of the tree.

/**
 * Manifests (by the ids of their chunks, which fix their bytes) that were read whole in this process with
 * every structure check passing. A subscriber reads a manifest several times per version (count, plan,
 * previous files, deltas); the later passes decode the same verified bytes, so they skip the order and
 * hardlink checks (ManifestReader's structureChecked). Bounded: the oldest are forgotten first.
 */
const structureChecked = new Set<string>()
const MAX_REMEMBERED = 64

function manifestKey (root: ManifestRoot): string {
  const hash = createHash('sha256')
  for (const c of root.chunks) hash.update(c.id)
  return `${root.entryCount}:${root.totalFileBytes}:${hash.digest('base64')}`
}

function rememberChecked (key: string): void {
  structureChecked.delete(key)
  structureChecked.add(key)
  if (structureChecked.size > MAX_REMEMBERED) structureChecked.delete(structureChecked.values().next().value as string)
}

/**
 * Streams the entries of the manifest described by `root`, verifying every chunk (the catalog re-hashes
 * in getBlob; we hash again, identity is computed, never trusted) and the structure (ManifestReader:
 * clean paths, canonical order, parents are directories; once per manifest and process, see
 * structureChecked). Throws ManifestBlobMissingError for a missing chunk and InvalidMessageError (or a
 * subclass) for anything malformed. Re-iterable: call it again.
 */
export async function * readManifestEntries (catalog: BlobStore, root: ManifestRoot, signal?: AbortSignal): AsyncGenerator<ManifestEntry> {
  const key = manifestKey(root)
  const reader = new ManifestReader({ structureChecked: structureChecked.has(key) })
  let fileBytes = 0
  for (let i = 0; i < root.chunks.length; i++) {
    signal?.throwIfAborted()
    for (const entry of reader.push(await manifestChunk(catalog, root, i))) {
      if (entry.type === 'file') fileBytes += entry.size
      yield entry
    }
  }
  reader.end()
  if (reader.entryCount !== root.entryCount) throw new InvalidMessageError(`manifest has ${reader.entryCount} entries, root says ${root.entryCount}`)
  if (fileBytes !== root.totalFileBytes) throw new InvalidMessageError(`manifest files add up to ${fileBytes} bytes, root says ${root.totalFileBytes}`)
  rememberChecked(key)
}

/** The manifest's header (its chunking parameters): the first records of its first chunk. */
export async function readManifestHeader (catalog: BlobStore, root: ManifestRoot): Promise<ManifestHeader> {
  if (root.chunks.length === 0) throw new InvalidMessageError('manifest has no chunks')
  const reader = new ManifestReader()
  reader.push(await manifestChunk(catalog, root, 0))
  if (reader.header === undefined) throw new InvalidMessageError('manifest header does not fit its first chunk')
  return reader.header
}

/** Chunk `i` of the manifest, from the catalog, checked against the root's size and id. */
async function manifestChunk (catalog: BlobStore, root: ManifestRoot, i: number): Promise<Uint8Array> {
  const chunk = root.chunks[i] as ManifestRoot['chunks'][number]
  const bytes = await catalog.getBlob(chunk.id)
  if (bytes === undefined) throw new ManifestBlobMissingError(toHex(chunk.id), i)
  if (bytes.byteLength !== chunk.size) throw new InvalidMessageError(`manifest chunk ${i}: ${bytes.byteLength} bytes, root says ${chunk.size}`)
  verifyChunk(chunk.id, bytes, `manifest chunk ${i}`)
  return bytes
}

/** Loads and decodes the root blob `rootHash` from the catalog. */
export async function loadRoot (catalog: BlobStore, rootHash: ChunkId): Promise<ManifestRoot> {
  const bytes = await catalog.getBlob(rootHash)
  if (bytes === undefined) throw new ManifestBlobMissingError(toHex(rootHash), -1)
  return decodeRoot(bytes)
}

export interface StoredManifest {
  root: ManifestRoot
  rootBytes: Uint8Array
  rootHash: ChunkId
}

/**
 * Stores a manifest already cut into chunks (in order) as catalog blobs, plus its root blob. The chunks are
 * decoded on the way (one at a time) so a broken manifest is refused before anything refers to it, and the
 * root's totals are computed rather than taken on trust.
 */
export async function storeManifest (catalog: BlobStore, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<StoredManifest> {
  const reader = new ManifestReader()
  const refs: ManifestRoot['chunks'] = []
  let manifestSize = 0
  let totalFileBytes = 0
  for await (const bytes of chunks) {
    if (bytes.byteLength === 0) continue
    for (const entry of reader.push(bytes)) if (entry.type === 'file') totalFileBytes += entry.size
    const id = chunkIdOf(bytes)
    await catalog.putBlob(id, bytes)
    refs.push({ id, size: bytes.byteLength })
    manifestSize += bytes.byteLength
  }
  reader.end()
  const root: ManifestRoot = { manifestSize, entryCount: reader.entryCount, totalFileBytes, chunks: refs }
  rememberChecked(manifestKey(root))
  const rootBytes = encodeRoot(root)
  const rootHash = chunkIdOf(rootBytes)
  await catalog.putBlob(rootHash, rootBytes)
  return { root, rootBytes, rootHash }
}
