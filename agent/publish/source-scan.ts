import { toHex } from '../../protocol/chunk-id.js'
import { isHoleChunk, ManifestWriter, type ChunkingParams, type ChunkRef, type ManifestHeader } from '../../protocol/manifest.js'
import { displayPath } from '../../protocol/paths.js'
import { scanCacheKey } from '../chunk/sizes.js'
import type { Logger } from '../core/log.js'
import { scanTree, type ChunkFileFn, type ScannedFile, type ScanItem, type SkipKind, type VerifyFileFn } from '../scan/scanner.js'
import type { Catalog, ChunkIndex, PlacedChunk, ScanCacheEntry, SkippedEntries, StoreRoot } from '../store/types.js'

// One pass over a source directory for a publish: the manifest written as the scanner yields entries, new and
// changed files indexed where they lie, the scan cache kept up to date, and what was left out counted.

const SCAN_CACHE_BATCH = 1000
/** Verified files whose index locations are checked in one read. */
const VERIFIED_BATCH = 256
/** New or changed files counted and indexed together. */
const NEW_FILES_BATCH = 256
/** Chunks of one batch of files at most (a verified or new ISO has 10,000s). */
const BATCH_CHUNKS = 65_536
/** Skipped entries named in the result, the version record and the log; the rest are counted. */
export const MAX_SKIPPED_SAMPLE = 20

export interface ScanStats {
  files: number
  bytes: number
  chunks: number
  newBytes: number
  newChunks: number
  cachedFiles: number
  verifiedFiles: number
  warnings: number
  hardlinks: number
}

export interface SourceScanOptions {
  source: string
  root: StoreRoot
  /** Created by this publish: nothing old to read and replace in the index. */
  freshRoot: boolean
  header: ManifestHeader
  chunking: ChunkingParams
  index: ChunkIndex
  catalog: Catalog
  chunkFile: ChunkFileFn
  verifyFile?: VerifyFileFn
  log: Logger
  signal?: AbortSignal
  now?: () => number
}

export interface ScannedSource {
  manifest: Buffer
  entryCount: number
  totalFileBytes: number
  stats: ScanStats
  skipped: SkippedEntries
  /** Changed files: candidates for a delta against the same path in the previous version. */
  changed: Map<string, { size: number, chunks: ChunkRef[] }>
  /** Files gone since the last scan (their cache entries and chunk locations are forgotten). */
  gone: string[]
}

/** Files gathered and handled together, up to `maxFiles` of them or BATCH_CHUNKS of their chunks. */
class FileBatch<T extends { chunks: readonly unknown[] }> {
  private items: T[] = []
  private chunks = 0

  constructor (private readonly maxFiles: number, private readonly handle: (items: T[]) => Promise<void>) {}

  async add (item: T): Promise<void> {
    this.items.push(item)
    this.chunks += item.chunks.length
    if (this.items.length >= this.maxFiles || this.chunks >= BATCH_CHUNKS) await this.flush()
  }

  async flush (): Promise<void> {
    const items = this.items
    this.items = []
    this.chunks = 0
    if (items.length > 0) await this.handle(items)
  }
}

/**
 * The manifest as it is written: one buffer, doubled when full. A Uint8Array per entry (each with its own
 * ArrayBuffer) held ~250 bytes per file until the end of the scan — 50 MB for 200,000 files.
 */
class GrowingBytes {
  private buffer = Buffer.allocUnsafe(64 * 1024)
  private length = 0

  append (bytes: Uint8Array): void {
    if (this.length + bytes.byteLength > this.buffer.byteLength) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * this.buffer.byteLength, this.length + bytes.byteLength))
      this.buffer.copy(bigger, 0, 0, this.length)
      this.buffer = bigger
    }
    this.buffer.set(bytes, this.length)
    this.length += bytes.byteLength
  }

  /** The bytes appended (a view: append no more). */
  take (): Buffer {
    return this.buffer.subarray(0, this.length)
  }
}

/** A scan cache entry that never matches a file (no inode is -1): it only records that the path was published. */
function uncacheable (size: number): ScanCacheEntry {
  return { size, mtimeMs: -1, ctimeMs: -1, ino: -1, chunks: [] }
}

export class SourceScan {
  private readonly writer: ManifestWriter
  private readonly manifest = new GrowingBytes()
  private readonly stats: ScanStats = { files: 0, bytes: 0, chunks: 0, newBytes: 0, newChunks: 0, cachedFiles: 0, verifiedFiles: 0, warnings: 0, hardlinks: 0 }
  private readonly skipped: SkippedEntries = { count: 0, sample: [] }
  private readonly seen = new Set<string>()
  private readonly countedChunks = new Set<string>()
  private readonly changed = new Map<string, { size: number, chunks: ChunkRef[] }>()
  private cacheBatch: Array<[string, ScanCacheEntry]> = []
  /** Cached chunk lists are only valid for the chunking that cut them. */
  private readonly cacheKey: string
  private readonly newFiles: FileBatch<{ relPath: string, chunks: PlacedChunk[], unseen: PlacedChunk[], stamp?: Buffer }>
  private readonly verifiedFiles: FileBatch<{ relPath: string, chunks: PlacedChunk[], stamp?: Buffer }>
  /** Unchanged files' stamps: recorded where they differ (a database from before stamps, a file touched and restored). */
  private readonly cachedFiles: FileBatch<{ relPath: string, chunks: readonly never[], stamp: Buffer }>

  constructor (private readonly o: SourceScanOptions) {
    this.writer = new ManifestWriter(o.header)
    this.manifest.append(this.writer.start())
    this.cacheKey = scanCacheKey(o.source, o.chunking)
    // New and changed files, counted and indexed in batches: per file, the index check of its chunks and the read
    // of its old locations were each a database iterator (~0.1 ms), most of a first publish of small files.
    this.newFiles = new FileBatch(NEW_FILES_BATCH, async batch => {
      // counted before this batch is indexed (its own chunks must not count as present)
      const present = await o.index.hasMany(batch.flatMap(f => f.unseen.map(c => c.id)))
      let k = 0
      for (const f of batch) for (const chunk of f.unseen) if (present[k++] !== true) { this.stats.newChunks++; this.stats.newBytes += chunk.size }
      // a root created by this publish has no old locations to read and replace (a crash leaves it existing:
      // the next publish takes the per-file path)
      if (o.freshRoot) await o.index.indexNewFiles(o.root.id, batch.map(f => ({ relPath: f.relPath, chunks: f.chunks, ...(f.stamp === undefined ? {} : { stamp: f.stamp }) })))
      else for (const f of batch) await o.index.indexFile(o.root.id, f.relPath, f.chunks, f.stamp)
    })
    // the stamp of a file whose locations are intact is recorded after the check; one missing any is indexed again with it
    this.verifiedFiles = new FileBatch(VERIFIED_BATCH, async batch => {
      const intact = await o.index.hasFiles(o.root.id, batch)
      for (const [i, f] of batch.entries()) if (intact[i] !== true) await o.index.indexFile(o.root.id, f.relPath, f.chunks, f.stamp)
      await o.index.recordStamps(o.root.id, batch.flatMap((f, i) => intact[i] === true && f.stamp !== undefined ? [{ relPath: f.relPath, stamp: f.stamp }] : []))
    })
    this.cachedFiles = new FileBatch(VERIFIED_BATCH, async batch => { await o.index.recordStamps(o.root.id, batch) })
  }

  /** Scans the whole source; the scan cache and the index are up to date when it returns. */
  async run (): Promise<ScannedSource> {
    const { catalog, index, root } = this.o
    const cache = {
      get: async (relPath: string) => await catalog.getScanEntry(this.cacheKey, relPath),
      getMany: async (relPaths: string[]) => await catalog.getScanEntries(this.cacheKey, relPaths),
    }
    const onSkip = (relPath: string, kind: SkipKind, reason: string): void => { this.skip(relPath, kind, reason) }
    for await (const item of scanTree(this.o.source, { chunkFile: this.o.chunkFile, verifyFile: this.o.verifyFile, cache, signal: this.o.signal, onSkip, now: this.o.now })) {
      await this.add(item)
    }
    await this.newFiles.flush()
    await this.verifiedFiles.flush()
    await this.cachedFiles.flush()
    if (this.cacheBatch.length > 0) await catalog.putScanEntries(this.cacheKey, this.cacheBatch)
    // Files gone from the source since the last scan: forget their cache entries and their chunk locations.
    const gone: string[] = []
    await catalog.pruneScanCache(this.cacheKey, relPath => { if (this.seen.has(relPath)) return true; gone.push(relPath); return false })
    for (const relPath of gone) await index.removeFile(root.id, relPath)
    return { manifest: this.manifest.take(), entryCount: this.writer.entryCount, totalFileBytes: this.writer.totalFileBytes, stats: this.stats, skipped: this.skipped, changed: this.changed, gone }
  }

  private skip (relPath: string, kind: SkipKind, reason: string): void {
    this.skipped.count++
    this.stats.warnings++
    const path = displayPath(relPath)
    if (this.skipped.sample.length < MAX_SKIPPED_SAMPLE) this.skipped.sample.push({ path, kind, reason })
    this.o.log.warn({ path, kind }, `not published: ${reason}`)
  }

  private async add (item: ScanItem): Promise<void> {
    this.manifest.append(this.writer.write(item.entry))
    const file = item.file
    if (file === undefined) {
      if (item.entry.type === 'file') this.stats.hardlinks++
      return
    }
    const s = this.stats
    this.seen.add(file.entry.path)
    s.files++
    s.bytes += file.entry.size
    s.chunks += file.chunks.length
    if (file.cached) {
      s.cachedFiles++
      if (file.stamp !== undefined) await this.cachedFiles.add({ relPath: file.entry.path, chunks: [], stamp: file.stamp })
    } else if (file.verified) {
      // Same bytes as when it was indexed: nothing new to count and no delta to compute. Its locations are
      // checked all the same (in batches, one read each): its content may have been different for a while, and
      // a read in that window drops the locations it found wrong; a file missing any is indexed again.
      s.verifiedFiles++
      await this.verifiedFiles.add({ relPath: file.entry.path, chunks: file.chunks, ...(file.stamp === undefined ? {} : { stamp: file.stamp }) })
    } else {
      await this.newFiles.add({ relPath: file.entry.path, chunks: file.chunks, unseen: this.unseen(file.chunks), ...(file.stamp === undefined ? {} : { stamp: file.stamp }) })
      this.changed.set(file.entry.path, { size: file.entry.size, chunks: file.chunks.map(c => ({ id: c.id, size: c.size })) })
    }
    await this.remember(file)
  }

  /** Chunks not counted yet in this publish; a hole is no chunk anyone stores: not new, never indexed. */
  private unseen (chunks: PlacedChunk[]): PlacedChunk[] {
    return chunks.filter(chunk => {
      if (isHoleChunk(chunk.id)) return false
      const key = toHex(chunk.id)
      if (this.countedChunks.has(key)) return false
      this.countedChunks.add(key)
      return true
    })
  }

  /**
   * A racy file (modified just now) is not cached, but its path must still be remembered: the scan cache is how
   * the next publish learns that a file is gone and drops its chunk locations from the index. A verified racy
   * file keeps the entry the cache has (it matches the bytes; its old ctime makes the next scan check again).
   */
  private async remember (file: ScannedFile): Promise<void> {
    if (file.verified) {
      if (file.cacheEntry !== undefined) this.cacheBatch.push([file.entry.path, file.cacheEntry])
    } else if (!file.cached) {
      this.cacheBatch.push([file.entry.path, file.cacheEntry ?? uncacheable(file.entry.size)])
    }
    // a path is cached only once its locations are in the index (a crash between must not leave it cached)
    if (this.cacheBatch.length >= SCAN_CACHE_BATCH) {
      await this.newFiles.flush()
      await this.o.catalog.putScanEntries(this.cacheKey, this.cacheBatch)
      this.cacheBatch = []
    }
  }
}
