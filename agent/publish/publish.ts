import { realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { KeyObject } from 'node:crypto'
import { chunkIdOf, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { rawPublicKeyOf, signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { encodeRoot, isHoleChunk, ManifestWriter, type ChunkingParams } from '../../protocol/manifest.js'
import { displayPath, validateTreeName } from '../../protocol/paths.js'
import { DeltameshError } from '../../protocol/errors.js'
import { chunkBytes } from '../chunk/chunker.js'
import { scanCacheKey } from '../chunk/sizes.js'
import { lstatSource, scanTree, type ChunkFileFn, type SkipKind, type VerifyFileFn } from '../scan/scanner.js'
import type { Catalog, ChunkIndex, PlacedChunk, ScanCacheEntry, SkippedEntries, StoreRoot, VersionStats } from '../store/types.js'
import type { Logger } from '../core/log.js'
import { computeDeltas, type DeltaStats } from '../delta/compute.js'
import { storeSignatures } from '../delta/signatures.js'
import type { ChunkRef } from '../../protocol/manifest.js'

export interface PublishOptions {
  tree: string
  source: string
  label?: string
  index: ChunkIndex
  catalog: Catalog
  publisherKey: KeyObject
  chunking: ChunkingParams
  chunkFile: ChunkFileFn
  /** Checks a file whose ctime alone changed against its cached chunks (ChunkerPool.verifyFile); default: in this thread. */
  verifyFile?: VerifyFileFn
  log: Logger
  signal?: AbortSignal
  now?: () => number
  /** Fail instead of publishing a version that leaves out any entry of the source (--strict). */
  strict?: boolean
}

export interface PublishResult {
  envelope: Envelope
  rootHex: string
  /** cachedFiles: reused from the scan cache unread; verifiedFiles: ctime alone changed, read and found to hold the cached chunks. */
  stats: VersionStats & { manifestBytes: number, cachedFiles: number, verifiedFiles: number, warnings: number, hardlinks: number }
  /** Entries of the source not in the version (special files, unreadable files and directories): never silent. */
  skipped: SkippedEntries
  /** Small-file deltas against the previous version (undefined: no previous version). */
  deltas?: DeltaStats
}

const SCAN_CACHE_BATCH = 1000
/** Skipped entries named in the result, the version record and the log; the rest are counted. */
export const MAX_SKIPPED_SAMPLE = 20

/** A --strict publish of a source holding entries a version cannot carry; nothing was published. */
export class SkippedEntriesError extends DeltameshError {
  static override name = 'SkippedEntriesError'
  constructor (readonly source: string, readonly skipped: SkippedEntries) {
    const list = skipped.sample.map(s => `  ${s.path}: ${s.reason}`).join('\n')
    const more = skipped.count > skipped.sample.length ? `\n  … and ${skipped.count - skipped.sample.length} more` : ''
    super(`${source}: ${skipped.count} entr${skipped.count === 1 ? 'y' : 'ies'} cannot be published (--strict):\n${list}${more}`)
    this.name = 'SkippedEntriesError'
  }
}
/** Verified files whose index locations are checked in one read. */
const VERIFIED_BATCH = 256
/** New or changed files counted and indexed together. */
const NEW_FILES_BATCH = 256
/** Chunks of one batch of files at most (a verified or new ISO has 10,000s). */
const BATCH_CHUNKS = 65_536

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
 * Records a new version of `tree` from the directory `source`: scan (reusing cached chunk lists of
 * unchanged files), chunk and hash what changed, index the chunks where they lie in the source (the tree
 * is the store: nothing is copied), build and chunk the manifest, and sign the envelope. This is the one
 * time the version's chunk list is computed; every subscriber reuses it.
 */
export async function publishVersion (o: PublishOptions): Promise<PublishResult> {
  const started = Date.now()
  const tree = validateTreeName(o.tree)
  const source = resolve(o.source)
  const st = await stat(source)
  if (!st.isDirectory()) throw new Error(`${source} is not a directory`)
  // where the bytes of this version are, should `source` be a symlink flipped to another directory later
  const realSource = await realpath(source)
  const log = o.log.child({ tree })

  const { root, created: freshRoot } = await sourceRoot(o.index, source, tree)
  // the top directory's own mode and times travel in the header (rsync -a keeps them for the destination)
  const top = await lstatSource(realSource)
  const writer = new ManifestWriter({ chunking: o.chunking, ...(top === undefined ? {} : { root: { mode: top.mode, mtimeMs: top.mtimeMsFloor, ...(top.mtimeNs === 0 ? {} : { mtimeNs: top.mtimeNs }) } }) })
  const manifestBytes = new GrowingBytes()
  manifestBytes.append(writer.start())
  const seen = new Set<string>()
  const countedChunks = new Set<string>()
  const stats = { files: 0, bytes: 0, chunks: 0, newBytes: 0, newChunks: 0, durationMs: 0, manifestBytes: 0, cachedFiles: 0, verifiedFiles: 0, warnings: 0, hardlinks: 0 }
  const skipped: SkippedEntries = { count: 0, sample: [] }
  let cacheBatch: Array<[string, ScanCacheEntry]> = []
  // changed files: candidates for a delta against the same path in the previous version (large ones per chunk)
  const changed = new Map<string, { size: number, chunks: ChunkRef[] }>()

  // New and changed files, counted and indexed in batches: per file, the index check of its chunks and the read
  // of its old locations were each a database iterator (~0.1 ms), most of a first publish of small files.
  const newFiles = new FileBatch<{ relPath: string, chunks: PlacedChunk[], unseen: PlacedChunk[] }>(NEW_FILES_BATCH, async batch => {
    // counted before this batch is indexed (its own chunks must not count as present)
    const present = await o.index.hasMany(batch.flatMap(f => f.unseen.map(c => c.id)))
    let k = 0
    for (const f of batch) for (const chunk of f.unseen) if (present[k++] !== true) { stats.newChunks++; stats.newBytes += chunk.size }
    // a root created by this publish has no old locations to read and replace (a crash leaves it existing:
    // the next publish takes the per-file path)
    if (freshRoot) await o.index.indexNewFiles(root.id, batch.map(f => ({ relPath: f.relPath, chunks: f.chunks })))
    else for (const f of batch) await o.index.indexFile(root.id, f.relPath, f.chunks)
  })

  const verifiedFiles = new FileBatch<{ relPath: string, chunks: PlacedChunk[] }>(VERIFIED_BATCH, async batch => {
    const intact = await o.index.hasFiles(root.id, batch)
    for (const [i, f] of batch.entries()) if (intact[i] !== true) await o.index.indexFile(root.id, f.relPath, f.chunks)
  })

  // cached chunk lists are only valid for the chunking that cut them
  const cacheKey = scanCacheKey(source, o.chunking)
  const cache = {
    get: async (relPath: string) => await o.catalog.getScanEntry(cacheKey, relPath),
    getMany: async (relPaths: string[]) => await o.catalog.getScanEntries(cacheKey, relPaths),
  }
  const onSkip = (relPath: string, kind: SkipKind, reason: string): void => {
    skipped.count++
    stats.warnings++
    const path = displayPath(relPath)
    if (skipped.sample.length < MAX_SKIPPED_SAMPLE) skipped.sample.push({ path, kind, reason })
    log.warn({ path, kind }, `not published: ${reason}`)
  }

  for await (const item of scanTree(source, { chunkFile: o.chunkFile, verifyFile: o.verifyFile, cache, signal: o.signal, onSkip, now: o.now })) {
    manifestBytes.append(writer.write(item.entry))
    const file = item.file
    if (file === undefined) {
      if (item.entry.type === 'file') stats.hardlinks++
      continue
    }
    seen.add(file.entry.path)
    stats.files++
    stats.bytes += file.entry.size
    stats.chunks += file.chunks.length
    if (file.cached) {
      stats.cachedFiles++
    } else if (file.verified) {
      // Same bytes as when it was indexed: nothing new to count and no delta to compute. Its locations are
      // checked all the same (in batches, one read each): its content may have been different for a while, and
      // a read in that window drops the locations it found wrong; a file missing any is indexed again.
      stats.verifiedFiles++
      await verifiedFiles.add({ relPath: file.entry.path, chunks: file.chunks })
    } else {
      // a hole is no chunk anyone stores: not new, never indexed
      const unseen = file.chunks.filter(chunk => {
        if (isHoleChunk(chunk.id)) return false
        const key = toHex(chunk.id)
        if (countedChunks.has(key)) return false
        countedChunks.add(key)
        return true
      })
      await newFiles.add({ relPath: file.entry.path, chunks: file.chunks, unseen })
      changed.set(file.entry.path, { size: file.entry.size, chunks: file.chunks.map(c => ({ id: c.id, size: c.size })) })
    }
    // A racy file (modified just now) is not cached, but its path must still be remembered: the scan cache
    // is how the next publish learns that a file is gone and drops its chunk locations from the index.
    // A verified racy file keeps the entry the cache has (it matches the bytes; its old ctime makes the next scan check again).
    if (file.verified) {
      if (file.cacheEntry !== undefined) cacheBatch.push([file.entry.path, file.cacheEntry])
    } else if (!file.cached) {
      cacheBatch.push([file.entry.path, file.cacheEntry ?? uncacheable(file.entry.size)])
    }
    // a path is cached only once its locations are in the index (a crash between must not leave it cached)
    if (cacheBatch.length >= SCAN_CACHE_BATCH) { await newFiles.flush(); await o.catalog.putScanEntries(cacheKey, cacheBatch); cacheBatch = [] }
  }
  await newFiles.flush()
  await verifiedFiles.flush()
  if (cacheBatch.length > 0) await o.catalog.putScanEntries(cacheKey, cacheBatch)
  // the scan cache and index are kept (the next publish reuses them); only the version is refused
  if (o.strict === true && skipped.count > 0) throw new SkippedEntriesError(source, skipped)

  // Files gone from the source since the last scan: forget their cache entries and their chunk locations.
  const gone: string[] = []
  await o.catalog.pruneScanCache(cacheKey, relPath => { if (seen.has(relPath)) return true; gone.push(relPath); return false })
  for (const relPath of gone) await o.index.removeFile(root.id, relPath)

  const manifest = manifestBytes.take()
  stats.manifestBytes = manifest.byteLength
  const manifestChunks = chunkBytes(manifest, o.chunking)
  for (const c of manifestChunks) await o.catalog.putBlob(c.id, manifest.subarray(c.offset, c.offset + c.size))
  const rootBytes = encodeRoot({
    manifestSize: manifest.byteLength,
    entryCount: writer.entryCount,
    totalFileBytes: writer.totalFileBytes,
    chunks: manifestChunks.map(c => ({ id: c.id, size: c.size })),
  })
  const rootHash: ChunkId = chunkIdOf(rootBytes)
  await o.catalog.putBlob(rootHash, rootBytes)

  const seq = await nextSeq(o.catalog, tree)
  // the next version's delta bases, should the source be edited in place before it is published
  try {
    const signatures = await storeSignatures({ source: realSource, files: changed, catalog: o.catalog, signal: o.signal })
    if (signatures.chunks > 0) log.info(signatures, 'signatures stored')
  } catch (err) {
    o.signal?.throwIfAborted()
    log.warn({ err }, 'storing block signatures failed; the next version may get fewer deltas')
  }
  // Deltas exist before the version is announced (the caller announces after we return), so the first
  // subscriber to ask finds them. They only save bytes: a failure here never fails the publish.
  let deltas: DeltaStats | undefined
  const baseSeq = (await o.catalog.listVersions(tree)).filter(v => v.state === 'complete' && v.seq < seq).at(-1)?.seq
  // even with no file changed, every manifest chunk may be new (new mtimes): its deltas still pay
  if (baseSeq !== undefined) {
    try {
      deltas = await computeDeltas({ tree, baseSeq, changed, gone: new Set(gone), manifestChunks, index: o.index, catalog: o.catalog, signal: o.signal })
      log.info({ baseSeq, ...deltas }, 'deltas computed')
    } catch (err) {
      o.signal?.throwIfAborted()
      log.warn({ err }, 'computing deltas failed; subscribers fetch plain chunks')
    }
  }
  const envelope = signEnvelope({
    tree,
    seq,
    label: o.label ?? '',
    createdAtMs: (o.now ?? Date.now)(),
    rootHash,
    rootSize: rootBytes.byteLength,
    publisherKey: rawPublicKeyOf(o.publisherKey),
  }, o.publisherKey)

  stats.durationMs = Date.now() - started
  await o.catalog.putVersion({ tree, seq, envelope: envelope.bytes, state: 'complete', rootId: root.id, path: source, ...(realSource === source ? {} : { realPath: realSource }), stats, ...(skipped.count > 0 ? { skipped } : {}) })
  const treeRecord = await o.catalog.getTree(tree)
  await o.catalog.putTree({ ...(treeRecord ?? { name: tree }), currentSeq: seq })
  log.info({ seq, root: toHex(rootHash), files: stats.files, bytes: stats.bytes, cachedFiles: stats.cachedFiles, verifiedFiles: stats.verifiedFiles, newBytes: stats.newBytes, skipped: skipped.count, ms: stats.durationMs }, 'published')
  if (skipped.count > 0) log.warn({ seq, skipped: skipped.count, first: skipped.sample.slice(0, 5) }, `${skipped.count} entries of the source are not in this version`)
  return { envelope, rootHex: toHex(rootHash), stats, skipped, deltas }
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

async function sourceRoot (index: ChunkIndex, source: string, tree: string): Promise<{ root: StoreRoot, created: boolean }> {
  const existing = (await index.listRoots()).find(r => r.kind === 'source' && r.path === source)
  if (existing !== undefined) return { root: existing, created: false }
  return { root: await index.addRoot({ kind: 'source', path: source, tree }), created: true }
}

async function nextSeq (catalog: Catalog, tree: string): Promise<number> {
  const versions = await catalog.listVersions(tree)
  const last = versions.at(-1)?.seq ?? 0
  const current = (await catalog.getTree(tree))?.currentSeq ?? 0
  return Math.max(last, current) + 1
}
