import { lstat, readdir, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { BigIntStats } from 'node:fs'
import type { ChunkingParams, FileEntry, ManifestEntry, ManifestHeader } from '../../protocol/manifest.js'
import { bytesToPath, fsPath, validateRelativePath } from '../../protocol/paths.js'
import type { PlacedChunk, ScanCacheEntry } from '../store/types.js'
import { verifyFileChunks } from '../chunk/verify.js'
import { stampOf } from '../fs/file-stamp.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import { msAndNanos } from '../fs/precise-times.js'

/**
 * Cuts one file into chunks (normally ChunkerPool.chunkFile bound to the tree's chunking parameters).
 * `size` is the size the scanner just saw (a hint: the chunker reads to the end of the file regardless).
 */
export type ChunkFileFn = (absolutePath: string, signal?: AbortSignal, size?: number, options?: ChunkFileOptions) => Promise<PlacedChunk[]>

export interface ChunkFileOptions {
  /** The file has fewer blocks than its size (holes): its all-zero chunks are recorded as holes. */
  sparse?: boolean
}

/**
 * True when the file still holds exactly these chunks (each range hashes to its id, nothing after the last);
 * normally ChunkerPool.verifyFile. Reads with bounded memory and stops at the first mismatch.
 */
export type VerifyFileFn = (absolutePath: string, chunks: readonly ChunkRef[], signal?: AbortSignal) => Promise<boolean>

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
  /**
   * The file's stamp when `chunks` are its bytes at that stamp and it is settled (the stats before and after
   * the read agreed, or the scan cache vouched for them; not modified just now): the chunk index serves its
   * chunks without re-hashing while the stamp holds.
   */
  stamp?: Buffer
}

/** A file entry, a directory, a symlink, or a hardlink of an earlier file (an entry with `linkTo`, no `file`). */
export type ScanItem = { entry: ManifestEntry, file?: ScannedFile }

/** Why an entry of the source is not in the manifest. */
export type SkipKind = 'fifo' | 'socket' | 'device' | 'unreadable' | 'name'

/** What the scanner needs of an lstat: exact nanoseconds (BigInt stats) as plain numbers. */
export interface SourceStat {
  kind: 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'device'
  size: number
  mode: number
  /** As node's Stats.mtimeMs (fractional), which the scan cache keys on. */
  mtimeMs: number
  /** Whole milliseconds and the nanoseconds past them, for the manifest. */
  mtimeMsFloor: number
  mtimeNs: number
  ctimeMs: number
  ino: number
  dev: number
  nlink: number
  /** Bytes allocated (st_blocks × 512): fewer than `size` means the file has holes. */
  allocated: number
  /** A regular file's stamp (agent/fs/file-stamp.ts): device, inode, size, mtime and ctime to the nanosecond. */
  stamp?: Buffer
}

export interface ScanOptions {
  chunkFile: ChunkFileFn
  /** Checks a file whose ctime alone changed against its cached chunks; default: verifyFileChunks in this thread. */
  verifyFile?: VerifyFileFn
  cache?: ScanCache
  signal?: AbortSignal
  /**
   * An entry left out of the manifest (special file, unreadable file or directory, a name too long to carry):
   * the publisher reports every one, and fails the publish with --strict. `relPath` is the raw path.
   */
  onSkip?: (relPath: string, kind: SkipKind, reason: string) => void
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
  const pending: Array<Promise<ScanItem | undefined>> = []
  const links: LinkLeaders = new Map()
  for await (const { item } of walk(root, '', options, links)) {
    pending.push(item)
    if (pending.length >= lookahead) {
      const done = await (pending.shift() as Promise<ScanItem | undefined>)
      if (done !== undefined) yield done
    }
  }
  while (pending.length > 0) {
    const done = await (pending.shift() as Promise<ScanItem | undefined>)
    if (done !== undefined) yield done
  }
}

/**
 * Yields a promise per entry, in order; file chunking starts immediately so many run concurrently.
 * (Wrapped in an object because an async generator would await a bare yielded promise.)
 */
async function * walk (root: string, dir: string, options: ScanOptions, links: LinkLeaders): AsyncGenerator<{ item: Promise<ScanItem | undefined> }> {
  options.signal?.throwIfAborted()
  let names: Buffer[]
  try {
    names = await readdir(fsPath(join(root, dir)), { encoding: 'buffer' })
  } catch (err) {
    // the directory entry is in the manifest already; what it holds cannot be listed
    if (dir !== '' && isUnreadable(err)) { options.onSkip?.(dir, 'unreadable', `directory cannot be listed (${codeOf(err)}); its contents are left out`); return }
    throw err
  }
  // byte order of the names is the manifest's canonical order
  names.sort(Buffer.compare)
  const valid: string[] = []
  for (const raw of names) {
    // names are bytes: every name POSIX allows is carried (see protocol/paths.ts); only one longer than the
    // manifest can hold (a path past PATH_MAX) is refused, and reported
    const name = bytesToPath(raw)
    const relPath = dir === '' ? name : `${dir}/${name}`
    try {
      valid.push(validateRelativePath(relPath))
    } catch (err) {
      options.onSkip?.(relPath, 'name', (err as Error).message)
    }
  }
  // lstat a directory's entries concurrently (a rescan is nothing but lstats), in bounded batches
  for (let start = 0; start < valid.length; start += LSTAT_BATCH) {
    const batch = valid.slice(start, start + LSTAT_BATCH)
    const stats = await Promise.all(batch.map(async relPath => await lstatSource(join(root, relPath))))
    const prefetched = await prefetchCache(batch, stats, options)
    for (let i = 0; i < batch.length; i++) {
      const st = stats[i]
      if (st !== undefined) yield * visit(root, batch[i] as string, st, options, links, prefetched.get(i))
    }
  }
}

/** lstat with exact nanoseconds; undefined when the entry was removed while we walked. */
export async function lstatSource (absolute: string): Promise<SourceStat | undefined> {
  let st: BigIntStats
  try {
    st = await lstat(fsPath(absolute), { bigint: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  return sourceStat(st)
}

const NS_PER_S = 1_000_000_000n

function sourceStat (st: BigIntStats): SourceStat {
  const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isSocket() ? 'socket' : 'device'
  const mtime = msAndNanos(st.mtimeNs)
  return {
    kind,
    size: Number(st.size),
    mode: Number(st.mode) & 0o7777,
    mtimeMs: msOf(st.mtimeNs),
    mtimeMsFloor: mtime.mtimeMs,
    mtimeNs: mtime.mtimeNs,
    ctimeMs: msOf(st.ctimeNs),
    ino: Number(st.ino),
    dev: Number(st.dev),
    nlink: Number(st.nlink),
    allocated: Number(st.blocks) * 512,
    ...(kind === 'file' ? { stamp: stampOf(st) } : {}),
  }
}

/** The fractional milliseconds node's number Stats give (sec × 1e3 + nsec / 1e6), so scan cache entries keep matching. */
function msOf (ns: bigint): number {
  let sec = ns / NS_PER_S
  let nsec = ns % NS_PER_S
  if (nsec < 0n) { sec -= 1n; nsec += NS_PER_S }
  return Number(sec) * 1e3 + Number(nsec) / 1e6
}

function codeOf (err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'error'
}

function isUnreadable (err: unknown): boolean {
  const code = codeOf(err)
  return code === 'EACCES' || code === 'EPERM'
}

/**
 * The first path of each inode with several links that the walk met (key dev:ino), so later names of it
 * become hardlink entries: rsync -H's job, done in the order the manifest is written.
 */
type LinkLeaders = Map<string, Promise<ScanItem | undefined>>

/** The cache entries of the batch's small files (by index in the batch; a miss is `{ entry: undefined }`). */
async function prefetchCache (batch: string[], stats: Array<SourceStat | undefined>, options: ScanOptions): Promise<Map<number, { entry: ScanCacheEntry | undefined }>> {
  const out = new Map<number, { entry: ScanCacheEntry | undefined }>()
  const getMany = options.cache?.getMany
  if (getMany === undefined) return out
  const wanted: number[] = []
  stats.forEach((st, i) => { if (st?.kind === 'file' && st.size <= PREFETCH_MAX_FILE_BYTES) wanted.push(i) })
  if (wanted.length < 2) return out // one file: a plain get is as cheap
  const entries = await getMany(wanted.map(i => batch[i] as string))
  wanted.forEach((i, k) => out.set(i, { entry: entries[k] }))
  return out
}

async function * visit (root: string, relPath: string, stats: SourceStat, options: ScanOptions, links: LinkLeaders, prefetched?: { entry: ScanCacheEntry | undefined }): AsyncGenerator<{ item: Promise<ScanItem | undefined> }> {
  const absolute = join(root, relPath)
  const times = { mtimeMs: stats.mtimeMsFloor, ...(stats.mtimeNs === 0 ? {} : { mtimeNs: stats.mtimeNs }) }
  switch (stats.kind) {
    case 'dir':
      yield { item: Promise.resolve({ entry: { type: 'dir', path: relPath, mode: stats.mode, ...times } }) }
      yield * walk(root, relPath, options, links)
      return
    case 'symlink': {
      const target = bytesToPath(await readlink(fsPath(absolute), { encoding: 'buffer' }))
      yield { item: Promise.resolve({ entry: { type: 'symlink', path: relPath, ...times, target } }) }
      return
    }
    case 'file': {
      const inode = stats.nlink > 1 ? `${stats.dev}:${stats.ino}` : undefined
      const leader = inode === undefined ? undefined : links.get(inode)
      if (leader !== undefined) {
        const item = hardlinkItem(relPath, leader, options)
        item.catch(() => {})
        yield { item }
        return
      }
      const item = scanFile(absolute, relPath, stats, options, prefetched).catch((err: unknown) => {
        if (!isUnreadable(err)) throw err
        options.onSkip?.(relPath, 'unreadable', `file cannot be read (${codeOf(err)})`)
        return undefined
      })
      item.catch(() => {}) // surfaced when awaited in order; avoid an unhandled rejection meanwhile
      if (inode !== undefined) links.set(inode, item)
      yield { item }
      return
    }
    default:
      // nothing of a FIFO, socket or device can be mirrored as data; rsync -a without -D leaves them out too
      options.onSkip?.(relPath, stats.kind, `${stats.kind === 'device' ? 'device node' : stats.kind === 'fifo' ? 'FIFO (named pipe)' : 'socket'} cannot be mirrored`)
  }
}

/**
 * Another name of a file met earlier in this walk: the same inode at the source, so the same content, mode
 * and times — the entry repeats them and names the first path (ManifestOrderChecker checks they agree).
 */
async function hardlinkItem (relPath: string, leader: Promise<ScanItem | undefined>, options: ScanOptions): Promise<ScanItem | undefined> {
  const first = await leader
  if (first === undefined || first.entry.type !== 'file') {
    // the first name could not be read: neither can this one, and it is reported too (never dropped silently)
    options.onSkip?.(relPath, 'unreadable', 'another name of a file that cannot be read')
    return undefined
  }
  const { linkable: _linkable, ...content } = first.entry
  const entry: FileEntry = { ...content, path: relPath, linkTo: first.entry.path }
  return { entry }
}

async function scanFile (absolute: string, relPath: string, stats: SourceStat, options: ScanOptions, prefetched?: { entry: ScanCacheEntry | undefined }): Promise<ScanItem> {
  const now = options.now ?? Date.now
  const cached = prefetched === undefined ? await options.cache?.get(relPath) : prefetched.entry
  // a list cut dense is not reused for a file that is sparse now: its zero runs would travel as data
  if (cached !== undefined && cached.size === stats.size && cached.mtimeMs === stats.mtimeMs && cached.ino === stats.ino && (cached.sparse === true || !isSparse(stats))) {
    if (cached.ctimeMs === stats.ctimeMs) return fileItem(relPath, stats, cached.chunks, 'cached', cached)
    const verified = await verifyCached(absolute, relPath, stats, cached, options)
    if (verified !== undefined) return verified
  }
  let current = stats
  for (let attempt = 0; attempt < MAX_RESCAN_ATTEMPTS; attempt++) {
    const sparse = isSparse(current)
    const chunks = await options.chunkFile(absolute, options.signal, current.size, { sparse })
    const after = await lstatSource(absolute)
    if (after === undefined) throw Object.assign(new Error(`${absolute} was removed while it was being chunked`), { code: 'ENOENT' })
    if (after.size === current.size && after.mtimeMs === current.mtimeMs && after.ctimeMs === current.ctimeMs && after.ino === current.ino) {
      const racy = now() - Math.max(after.mtimeMs, after.ctimeMs) < RACY_MTIME_WINDOW_MS
      const cacheEntry = racy ? undefined : { size: after.size, mtimeMs: after.mtimeMs, ctimeMs: after.ctimeMs, ino: after.ino, chunks, ...(sparse ? { sparse } : {}) }
      return fileItem(relPath, after, chunks, 'chunked', cacheEntry)
    }
    current = after
  }
  throw new FileChangedDuringScanError(absolute)
}

/**
 * Holes at the source: fewer bytes allocated than the size. Node has no SEEK_DATA / SEEK_HOLE, so where the
 * holes are is not asked: the chunker records every all-zero chunk of such a file as a hole, as rsync -S
 * writes zero runs as holes; a dense file's zeros stay data (docs/design-notes.md "Sparse files").
 */
function isSparse (st: SourceStat): boolean {
  return st.allocated < st.size
}

/**
 * A file whose size, mtime and inode match the cache but whose ctime does not: hardlinked into a new tree,
 * chmod'ed, touched and restored, or restored from a backup — or rewritten with its mtime put back (`cp -p`,
 * `rsync -t`, tar), which is why ctime stays in the key. Hashing the bytes at the cached boundaries costs
 * about 40 % of cutting them (docs/design-notes.md) and tells the two apart: content-defined boundaries
 * depend on the bytes alone, so identical bytes mean the identical chunk list. Undefined when the bytes differ
 * or the file changed while it was read: the caller chunks it.
 */
async function verifyCached (absolute: string, relPath: string, stats: SourceStat, cached: ScanCacheEntry, options: ScanOptions): Promise<ScanItem | undefined> {
  const verify = options.verifyFile ?? (async (path, chunks, signal) => await verifyFileChunks(path, chunks, { signal }))
  if (!await verify(absolute, cached.chunks, options.signal)) return undefined
  const after = await lstatSource(absolute)
  if (after === undefined) return undefined
  if (after.size !== stats.size || after.mtimeMs !== stats.mtimeMs || after.ctimeMs !== stats.ctimeMs || after.ino !== stats.ino) return undefined
  // the same racy-mtime rule as for a chunked file; a racy one keeps the cache's old entry (see ScannedFile)
  const now = options.now ?? Date.now
  const racy = now() - Math.max(after.mtimeMs, after.ctimeMs) < RACY_MTIME_WINDOW_MS
  const cacheEntry = racy ? undefined : { ...cached, ctimeMs: after.ctimeMs }
  return fileItem(relPath, after, cached.chunks, 'verified', cacheEntry)
}

function fileItem (relPath: string, stats: SourceStat, chunks: PlacedChunk[], how: 'cached' | 'verified' | 'chunked', cacheEntry: ScanCacheEntry | undefined): ScanItem {
  const entry: FileEntry & { type: 'file' } = {
    type: 'file',
    path: relPath,
    mode: stats.mode,
    mtimeMs: stats.mtimeMsFloor,
    ...(stats.mtimeNs === 0 ? {} : { mtimeNs: stats.mtimeNs }),
    size: stats.size,
    chunks: chunks.map(c => ({ id: c.id, size: c.size })),
    // other names of it may follow in this manifest
    ...(stats.nlink > 1 ? { linkable: true } : {}),
  }
  const stamp = cacheEntry === undefined ? undefined : stats.stamp
  return { entry, file: { entry, chunks, cached: how === 'cached', verified: how === 'verified', cacheEntry, ...(stamp === undefined ? {} : { stamp }) } }
}

/**
 * The manifest header of a source directory: its chunking and its top directory's own mode and times (rsync -a
 * keeps them for the destination). `root` must be the real directory, not a symlink to it.
 */
export async function sourceHeader (root: string, chunking: ChunkingParams): Promise<ManifestHeader> {
  const top = await lstatSource(root)
  if (top === undefined) return { chunking }
  return { chunking, root: { mode: top.mode, mtimeMs: top.mtimeMsFloor, ...(top.mtimeNs === 0 ? {} : { mtimeNs: top.mtimeNs }) } }
}

