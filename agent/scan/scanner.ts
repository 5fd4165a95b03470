import { lstat, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Stats } from 'node:fs'
import type { ManifestEntry } from '../../protocol/manifest.js'
import { validateRelativePath } from '../../protocol/paths.js'
import type { PlacedChunk, ScanCacheEntry } from '../store/types.js'
import { verifyFileChunks, type SizedChunkId } from '../chunk/verify.js'

/**
 * Cuts one file into chunks (normally ChunkerPool.chunkFile bound to the tree's chunking parameters).
 * `size` is the size the scanner just saw (a hint: the chunker reads to the end of the file regardless).
 */
export type ChunkFileFn = (absolutePath: string, signal?: AbortSignal, size?: number) => Promise<PlacedChunk[]>

/**
 * True when the file still holds exactly these chunks (each range hashes to its id, nothing after the last);
 * normally ChunkerPool.verifyFile. Reads with bounded memory and stops at the first mismatch.
 */
export type VerifyFileFn = (absolutePath: string, chunks: readonly SizedChunkId[], signal?: AbortSignal) => Promise<boolean>

/** The scan cache as the scanner needs it (Catalog implements it for one source directory). */
export interface ScanCache {
  get (relPath: string): Promise<ScanCacheEntry | undefined>
  /** get() for many paths in one read; the scanner uses it for the small files of each lstat batch. */
  getMany?: (relPaths: string[]) => Promise<Array<ScanCacheEntry | undefined>>
}

export interface ScannedFile {
  entry: ManifestEntry & { type: 'file' }
  chunks: PlacedChunk[]
  /** True when the chunk list came from the cache (no byte of the file was read). */
  cached: boolean
  /**
   * True when only the ctime differed from the cache and the file was read and found to hold the cached
   * chunks (so `chunks` is the cached list, no cutter ran). Its index locations are those recorded before.
   */
  verified: boolean
  /**
   * What to store in the scan cache for this file, or undefined when it must not be cached (racy mtime). For a
   * verified file, undefined means "keep the entry the cache has": it still describes the bytes, and its stale
   * ctime makes the next scan verify again.
   */
  cacheEntry: ScanCacheEntry | undefined
}

export type ScanItem = { entry: ManifestEntry, file?: ScannedFile }

export interface ScanOptions {
  chunkFile: ChunkFileFn
  /** Checks a file whose ctime alone changed against its cached chunks; default: verifyFileChunks in this thread. */
  verifyFile?: VerifyFileFn
  cache?: ScanCache
  signal?: AbortSignal
  /** Special files, unreadable names and other things we skip instead of failing the whole scan. */
  onWarning?: (relPath: string, reason: string) => void
  /** How many files may be chunked at once ahead of the one being emitted (keeps all pool workers busy). */
  lookahead?: number
  /** Injectable clock for the racy-mtime rule. */
  now?: () => number
}

/** A file modified within this window of the scan may change again within the same mtime tick: never trust it from cache. */
const RACY_MTIME_WINDOW_MS = 2000
const DEFAULT_LOOKAHEAD = 64
const MAX_RESCAN_ATTEMPTS = 3
const LSTAT_BATCH = 256
/**
 * Files up to this size have their cache entries read together, one read per lstat batch: one LevelDB get per
 * file was most of a rescan's CPU on small files (5,000 files: ~0.1 ms each). Larger files are looked up alone,
 * so a batch never holds more than 256 entries of ≤ ~1,000 chunks (~9 MiB) however large the files it lists.
 */
const PREFETCH_MAX_FILE_BYTES = 16 * 1024 * 1024

export class FileChangedDuringScanError extends Error {
  static override name = 'FileChangedDuringScanError'
  constructor (readonly path: string) {
    super(`File kept changing while it was being chunked: ${path}`)
    this.name = 'FileChangedDuringScanError'
  }
}

/**
 * Walks `root` depth-first with each directory's names in byte order, which is exactly the manifest's
 * canonical order, so entries stream out without holding the tree. Files whose (size, mtime, ctime, inode)
 * match the cache reuse their chunk lists: rescanning an unchanged tree costs one lstat per entry. Files
 * whose ctime alone changed are read and checked against the cached chunks before those are reused. Symlinks are
 * recorded as links and never followed; sockets, FIFOs and devices are skipped with a warning.
 */
export async function * scanTree (root: string, options: ScanOptions): AsyncGenerator<ScanItem> {
  const lookahead = options.lookahead ?? DEFAULT_LOOKAHEAD
  const pending: Array<Promise<ScanItem>> = []
  for await (const { item } of walk(root, '', options)) {
    pending.push(item)
    if (pending.length >= lookahead) yield await (pending.shift() as Promise<ScanItem>)
  }
  while (pending.length > 0) yield await (pending.shift() as Promise<ScanItem>)
}

/**
 * Yields a promise per entry, in order; file chunking starts immediately so many run concurrently.
 * (Wrapped in an object because an async generator would await a bare yielded promise.)
 */
async function * walk (root: string, dir: string, options: ScanOptions): AsyncGenerator<{ item: Promise<ScanItem> }> {
  options.signal?.throwIfAborted()
  const names = await readdir(join(root, dir), { encoding: 'buffer' })
  names.sort(Buffer.compare)
  const valid: string[] = []
  for (const raw of names) {
    const name = raw.toString('utf8')
    const relPath = dir === '' ? name : `${dir}/${name}`
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      options.onWarning?.(relPath, 'name is not valid UTF-8; skipped')
      continue
    }
    try {
      valid.push(validateRelativePath(relPath))
    } catch (err) {
      options.onWarning?.(relPath, `${(err as Error).message}; skipped`)
    }
  }
  // lstat a directory's entries concurrently (a rescan is nothing but lstats), in bounded batches
  for (let start = 0; start < valid.length; start += LSTAT_BATCH) {
    const batch = valid.slice(start, start + LSTAT_BATCH)
    const stats = await Promise.all(batch.map(async relPath => await lstat(join(root, relPath)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined // removed while we walked
      throw err
    })))
    const prefetched = await prefetchCache(batch, stats, options)
    for (let i = 0; i < batch.length; i++) {
      const st = stats[i]
      if (st !== undefined) yield * visit(root, batch[i] as string, st, options, prefetched.get(i))
    }
  }
}

/** The cache entries of the batch's small files (by index in the batch; a miss is `{ entry: undefined }`). */
async function prefetchCache (batch: string[], stats: Array<Stats | undefined>, options: ScanOptions): Promise<Map<number, { entry: ScanCacheEntry | undefined }>> {
  const out = new Map<number, { entry: ScanCacheEntry | undefined }>()
  const getMany = options.cache?.getMany
  if (getMany === undefined) return out
  const wanted: number[] = []
  stats.forEach((st, i) => { if (st?.isFile() === true && st.size <= PREFETCH_MAX_FILE_BYTES) wanted.push(i) })
  if (wanted.length < 2) return out // one file: a plain get is as cheap
  const entries = await getMany(wanted.map(i => batch[i] as string))
  wanted.forEach((i, k) => out.set(i, { entry: entries[k] }))
  return out
}

async function * visit (root: string, relPath: string, stats: Stats, options: ScanOptions, prefetched?: { entry: ScanCacheEntry | undefined }): AsyncGenerator<{ item: Promise<ScanItem> }> {
  const absolute = join(root, relPath)
  const mtimeMs = Math.floor(stats.mtimeMs)
  if (stats.isDirectory()) {
    yield { item: Promise.resolve({ entry: { type: 'dir', path: relPath, mode: stats.mode & 0o7777, mtimeMs } }) }
    yield * walk(root, relPath, options)
  } else if (stats.isSymbolicLink()) {
    const target = await readlink(absolute)
    yield { item: Promise.resolve({ entry: { type: 'symlink', path: relPath, mtimeMs, target } }) }
  } else if (stats.isFile()) {
    const item = scanFile(absolute, relPath, stats, options, prefetched)
    item.catch(() => {}) // surfaced when awaited in order; avoid an unhandled rejection meanwhile
    yield { item }
  } else {
    options.onWarning?.(relPath, 'special file (socket, FIFO or device); skipped')
  }
}

async function scanFile (absolute: string, relPath: string, stats: Stats, options: ScanOptions, prefetched?: { entry: ScanCacheEntry | undefined }): Promise<ScanItem> {
  const now = options.now ?? Date.now
  const cached = prefetched === undefined ? await options.cache?.get(relPath) : prefetched.entry
  if (cached !== undefined && cached.size === stats.size && cached.mtimeMs === stats.mtimeMs && cached.ino === stats.ino) {
    if (cached.ctimeMs === stats.ctimeMs) return fileItem(relPath, stats, cached.chunks, 'cached', cached)
    const verified = await verifyCached(absolute, relPath, stats, cached, options)
    if (verified !== undefined) return verified
  }
  let current = stats
  for (let attempt = 0; attempt < MAX_RESCAN_ATTEMPTS; attempt++) {
    const chunks = await options.chunkFile(absolute, options.signal, current.size)
    const after = await lstat(absolute)
    if (after.size === current.size && after.mtimeMs === current.mtimeMs && after.ctimeMs === current.ctimeMs && after.ino === current.ino) {
      const racy = now() - Math.max(after.mtimeMs, after.ctimeMs) < RACY_MTIME_WINDOW_MS
      const cacheEntry = racy ? undefined : { size: after.size, mtimeMs: after.mtimeMs, ctimeMs: after.ctimeMs, ino: after.ino, chunks }
      return fileItem(relPath, after, chunks, 'chunked', cacheEntry)
    }
    current = after
  }
  throw new FileChangedDuringScanError(absolute)
}

/**
 * A file whose size, mtime and inode match the cache but whose ctime does not: hardlinked into a new tree,
 * chmod'ed, touched and restored, or restored from a backup — or rewritten with its mtime put back (`cp -p`,
 * `rsync -t`, tar), which is why ctime stays in the key. Hashing the bytes at the cached boundaries costs
 * about 40 % of cutting them (docs/design-notes.md) and tells the two apart: content-defined boundaries
 * depend on the bytes alone, so identical bytes mean the identical chunk list. Undefined when the bytes differ
 * or the file changed while it was read: the caller chunks it.
 */
async function verifyCached (absolute: string, relPath: string, stats: Stats, cached: ScanCacheEntry, options: ScanOptions): Promise<ScanItem | undefined> {
  const verify = options.verifyFile ?? (async (path, chunks, signal) => await verifyFileChunks(path, chunks, { signal }))
  if (!await verify(absolute, cached.chunks, options.signal)) return undefined
  const after = await lstat(absolute)
  if (after.size !== stats.size || after.mtimeMs !== stats.mtimeMs || after.ctimeMs !== stats.ctimeMs || after.ino !== stats.ino) return undefined
  // the same racy-mtime rule as for a chunked file; a racy one keeps the cache's old entry (see ScannedFile)
  const now = options.now ?? Date.now
  const racy = now() - Math.max(after.mtimeMs, after.ctimeMs) < RACY_MTIME_WINDOW_MS
  const cacheEntry = racy ? undefined : { ...cached, ctimeMs: after.ctimeMs }
  return fileItem(relPath, after, cached.chunks, 'verified', cacheEntry)
}

function fileItem (relPath: string, stats: Stats, chunks: PlacedChunk[], how: 'cached' | 'verified' | 'chunked', cacheEntry: ScanCacheEntry | undefined): ScanItem {
  const entry = {
    type: 'file' as const,
    path: relPath,
    mode: stats.mode & 0o7777,
    mtimeMs: Math.floor(stats.mtimeMs),
    size: stats.size,
    chunks: chunks.map(c => ({ id: c.id, size: c.size })),
  }
  return { entry, file: { entry, chunks, cached: how === 'cached', verified: how === 'verified', cacheEntry } }
}
