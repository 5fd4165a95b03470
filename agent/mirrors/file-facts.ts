// What the metalink says of a file, from this site's own store: the file's entry in each version whose signed
// manifest is here, and the SHA-256 of its bytes. A manifest lists chunk ids, not a whole-file hash, so the
// hash is computed from the chunks this site holds (each re-hashed against its id as it is read: the index
// does that on every read), then cached. A site that holds no copy of the bytes cannot vouch for them.
import { createHash } from 'node:crypto'
import { openEnvelope } from '../../protocol/envelope.js'
import { comparePaths } from '../../protocol/paths.js'
import { isHoleChunk, type FileEntry, type ManifestEntry } from '../../protocol/manifest.js'
import { toHex } from '../../protocol/chunk-id.js'
import type { FileFacts } from '../../protocol/metalink.js'
import type { BlobStore, Catalog, ChunkIndex } from '../store/types.js'
import { loadRoot, readManifestEntries } from '../store/manifest-io.js'
import { BoundedMap } from '../core/bounded-map.js'

/** Entries and hashes remembered (a repository's metadata files asked for over and over). */
export const DEFAULT_CACHE_ENTRIES = 4096
/** Zeros of a hole are hashed this many at a time. */
const ZEROS = new Uint8Array(1024 * 1024)

export interface VersionRef { seq: number, label: string }
/** The path's entry in a version: a file, something else, nothing there, or a manifest this site lacks. */
export type EntryLookup = { kind: 'file', entry: FileEntry } | { kind: 'other', type: ManifestEntry['type'] } | { kind: 'absent' } | { kind: 'no-manifest' }

export interface FileFactsComponents {
  catalog: Pick<Catalog, 'listVersions'> & BlobStore
  index: Pick<ChunkIndex, 'readChunk'>
}

/** Bytes-identical test of two file entries: same size and the same chunks (ids and sizes) in the same order. */
export function sameContent (a: FileEntry, b: FileEntry): boolean {
  if (a.size !== b.size || a.chunks.length !== b.chunks.length) return false
  return a.chunks.every((c, i) => c.size === b.chunks[i]?.size && toHex(c.id) === toHex(b.chunks[i]?.id as Uint8Array))
}

function contentKey (e: FileEntry): string {
  const h = createHash('sha256')
  for (const c of e.chunks) { h.update(c.id); h.update(String(c.size)) }
  return `${e.size}:${h.digest('hex')}`
}

export class FileFactsSource {
  private readonly entries: BoundedMap<string, EntryLookup>
  private readonly hashes: BoundedMap<string, string>

  constructor (private readonly c: FileFactsComponents, maxEntries = DEFAULT_CACHE_ENTRIES) {
    this.entries = new BoundedMap(maxEntries)
    this.hashes = new BoundedMap(maxEntries)
  }

  /** Versions of the tree whose manifest may be here (not failed ones), newest first. */
  async versions (tree: string): Promise<VersionRef[]> {
    const all = await this.c.catalog.listVersions(tree)
    return all.filter(v => v.state !== 'failed').map(v => ({ seq: v.seq, label: openEnvelope(v.envelope).label })).sort((a, b) => b.seq - a.seq)
  }

  /** The path's entry in version `seq` of `tree` (streams the manifest up to the path: entries are in path order). */
  async lookup (tree: string, seq: number, path: string, signal?: AbortSignal): Promise<EntryLookup> {
    const key = `${tree}\0${seq}\0${path}`
    const cached = this.entries.get(key)
    if (cached !== undefined) return cached
    const found = await this.scan(tree, seq, path, signal)
    this.entries.set(key, found)
    return found
  }

  private async scan (tree: string, seq: number, path: string, signal?: AbortSignal): Promise<EntryLookup> {
    const version = (await this.c.catalog.listVersions(tree)).find(v => v.seq === seq)
    if (version === undefined) return { kind: 'no-manifest' }
    try {
      const root = await loadRoot(this.c.catalog, openEnvelope(version.envelope).rootHash)
      for await (const entry of readManifestEntries(this.c.catalog, root, signal)) {
        const order = comparePaths(entry.path, path)
        if (order < 0) continue
        if (order > 0) break
        return entry.type === 'file' ? { kind: 'file', entry } : { kind: 'other', type: entry.type }
      }
      return { kind: 'absent' }
    } catch (err) {
      if ((err as Error).name === 'ManifestBlobMissingError') return { kind: 'no-manifest' }
      throw err
    }
  }

  /** Size, SHA-256 and timestamp of the file's bytes, or undefined when a chunk of it is not held here. */
  async facts (entry: FileEntry, signal?: AbortSignal): Promise<FileFacts | undefined> {
    const key = contentKey(entry)
    let sha256 = this.hashes.get(key)
    if (sha256 === undefined) {
      sha256 = await this.hash(entry, signal)
      if (sha256 === undefined) return undefined
      this.hashes.set(key, sha256)
    }
    return { size: entry.size, sha256, timestampS: Math.floor(entry.mtimeMs / 1000) }
  }

  private async hash (entry: FileEntry, signal?: AbortSignal): Promise<string | undefined> {
    const h = createHash('sha256')
    for (const c of entry.chunks) {
      signal?.throwIfAborted()
      if (isHoleChunk(c.id)) {
        for (let left = c.size; left > 0; left -= ZEROS.byteLength) h.update(ZEROS.subarray(0, Math.min(left, ZEROS.byteLength)))
        continue
      }
      const bytes = await this.c.index.readChunk(c.id, signal) ?? await this.c.catalog.getBlob(c.id)
      if (bytes === undefined || bytes.byteLength !== c.size) return undefined
      h.update(bytes)
    }
    return h.digest('hex')
  }
}
