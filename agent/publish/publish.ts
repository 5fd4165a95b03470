import { realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { KeyObject } from 'node:crypto'
import { chunkIdOf, idsEqual, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { openEnvelope, rawPublicKeyOf, signEnvelope, type Envelope } from '../../protocol/envelope.js'
import { encodeRoot, type ChunkingParams } from '../../protocol/manifest.js'
import { validateTreeName } from '../../protocol/paths.js'
import { DeltameshError } from '../../protocol/errors.js'
import { chunkBytes } from '../chunk/chunker.js'
import { sourceHeader, type ChunkFileFn, type VerifyFileFn } from '../scan/scanner.js'
import { SourceScan, type ScannedSource } from './source-scan.js'
import type { Catalog, ChunkIndex, SkippedEntries, StoreRoot, VersionRecord, VersionStats } from '../store/types.js'
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
  /** Publish a new version even when the tree is identical to the newest one (same root). */
  force?: boolean
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
  /** The tree is identical to the newest version (same root): nothing was published, `envelope` is that version's. */
  unchanged?: boolean
}

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
  const header = await sourceHeader(realSource, o.chunking)
  const scanned = await new SourceScan({ ...o, source, root, freshRoot, header, log }).run()
  const { stats: scanStats, skipped } = scanned
  // the scan cache and index are kept (the next publish reuses them); only the version is refused
  if (o.strict === true && skipped.count > 0) throw new SkippedEntriesError(source, skipped)

  const { rootHash, rootBytes, manifestChunks } = await storeManifestBlobs(o.catalog, scanned, o.chunking)
  const stats = { ...scanStats, manifestBytes: scanned.manifest.byteLength, durationMs: Date.now() - started }
  // an identical tree (same root: every name, mode, time and chunk) is the newest version already
  // read once: the newest complete version is also the delta base, and the seqs give the next one
  const versions = await o.catalog.listVersions(tree)
  const newest = versions.filter(v => v.state === 'complete').at(-1)
  if (o.force !== true && newest !== undefined) {
    const envelope = openEnvelope(newest.envelope)
    if (idsEqual(envelope.rootHash, rootHash)) {
      log.info({ seq: newest.seq, root: toHex(rootHash) }, 'unchanged: the newest version is this tree; nothing published')
      return { envelope, rootHex: toHex(rootHash), stats, skipped, unchanged: true }
    }
  }
  const seq = await nextSeq(o.catalog, tree, versions)
  const deltas = await prepareNextDeltas(o, { tree, baseSeq: newest?.seq, realSource, scanned, manifestChunks, log })
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

/** The manifest cut into chunks and stored as blobs, and the root that lists them (whose hash is signed). */
async function storeManifestBlobs (catalog: Catalog, scanned: ScannedSource, chunking: ChunkingParams): Promise<{ rootHash: ChunkId, rootBytes: Uint8Array, manifestChunks: ChunkRef[] }> {
  const manifest = scanned.manifest
  const cut = chunkBytes(manifest, chunking)
  for (const c of cut) await catalog.putBlob(c.id, manifest.subarray(c.offset, c.offset + c.size))
  const manifestChunks = cut.map(c => ({ id: c.id, size: c.size }))
  const rootBytes = encodeRoot({ manifestSize: manifest.byteLength, entryCount: scanned.entryCount, totalFileBytes: scanned.totalFileBytes, chunks: manifestChunks })
  const rootHash: ChunkId = chunkIdOf(rootBytes)
  await catalog.putBlob(rootHash, rootBytes)
  return { rootHash, rootBytes, manifestChunks }
}

/**
 * What makes the next sync cheap: block signatures of the changed files (delta bases, should the source be
 * edited in place before the next publish) and this version's deltas against the previous one. Deltas exist
 * before the version is announced (the caller announces after we return), so the first subscriber to ask
 * finds them. Both only save bytes: a failure here never fails the publish.
 */
async function prepareNextDeltas (o: PublishOptions, v: { tree: string, baseSeq: number | undefined, realSource: string, scanned: ScannedSource, manifestChunks: ChunkRef[], log: Logger }): Promise<DeltaStats | undefined> {
  const { scanned, log } = v
  try {
    const signatures = await storeSignatures({ source: v.realSource, files: scanned.changed, catalog: o.catalog, signal: o.signal })
    if (signatures.chunks > 0) log.info(signatures, 'signatures stored')
  } catch (err) {
    o.signal?.throwIfAborted()
    log.warn({ err }, 'storing block signatures failed; the next version may get fewer deltas')
  }
  const baseSeq = v.baseSeq
  // even with no file changed, every manifest chunk may be new (new mtimes): its deltas still pay
  if (baseSeq === undefined) return undefined
  try {
    const deltas = await computeDeltas({ tree: v.tree, baseSeq, changed: scanned.changed, gone: new Set(scanned.gone), manifestChunks: v.manifestChunks, index: o.index, catalog: o.catalog, signal: o.signal })
    log.info({ baseSeq, ...deltas }, 'deltas computed')
    return deltas
  } catch (err) {
    o.signal?.throwIfAborted()
    log.warn({ err }, 'computing deltas failed; subscribers fetch plain chunks')
    return undefined
  }
}

async function sourceRoot (index: ChunkIndex, source: string, tree: string): Promise<{ root: StoreRoot, created: boolean }> {
  const existing = (await index.listRoots()).find(r => r.kind === 'source' && r.path === source)
  if (existing !== undefined) return { root: existing, created: false }
  return { root: await index.addRoot({ kind: 'source', path: source, tree }), created: true }
}

async function nextSeq (catalog: Catalog, tree: string, versions: VersionRecord[]): Promise<number> {
  const last = versions.at(-1)?.seq ?? 0
  const current = (await catalog.getTree(tree))?.currentSeq ?? 0
  return Math.max(last, current) + 1
}
