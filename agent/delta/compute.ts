// Publisher side of small-file deltas: once per version, for each changed small file whose previous content
// (the same path in the previous version) is still readable, a delta is computed and stored by its key.
// The previous content is read through the chunk index, which re-hashes it: a source edited in place has
// lost the old bytes of its edited chunks, and such files simply get no delta (plain chunks serve them).
// A source given through a symlink that was flipped to a new directory (`latest` → each compose, a
// checkout per tag) has not lost them: the index's locations resolve into the new directory, but the
// previous version recorded where its bytes really were, and the file is read there (and re-hashed).
// A source edited in place has lost them for good; then the delta is matched against the block signatures
// this publisher recorded when it published the previous version (signatures.ts, protocol/signature-delta.ts).
import { join } from 'node:path'
import { deltaKeyOf, encodeDelta } from '../../protocol/delta.js'
import { decodeRoot, type ChunkRef, type ManifestEntry } from '../../protocol/manifest.js'
import { openEnvelope } from '../../protocol/envelope.js'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { encodeDeltaFromSignatures, SIG_BLOCK } from '../../protocol/signature-delta.js'
import { forgetSignatures } from './signatures.js'
import { readManifestEntries } from '../store/manifest-io.js'
import { computeManifestDeltas, type ManifestDeltaStats } from './manifest-delta.js'
import { computeChunkDeltas, isLarge, type ChunkDeltaStats } from './chunk-deltas.js'
import type { Catalog, ChunkIndex } from '../store/types.js'
import { hasHole, readAll, readFileVerified } from './read-chunks.js'

/** A delta is kept only if it is at most this share of the target bytes the base lacks. */
const KEEP_RATIO = 0.5

export interface DeltaStats {
  candidates: number
  stored: number
  baseUnavailable: number
  baseFromRealPath: number
  /** Deltas matched against the previous version's block signatures (its bytes were overwritten in place). */
  fromSignatures: number
  /** Signatures forgotten: chunks of files this version replaced or removed. */
  signaturesForgotten: number
  targetBytes: number
  deltaBytes: number
  /** Deltas of the new manifest's chunks (when `manifestChunks` was given). */
  manifest?: ManifestDeltaStats
  /** Per-chunk deltas of large changed files. */
  chunks: ChunkDeltaStats
  ms: number
}

export interface ComputeDeltasOptions {
  tree: string
  /** The seq of the version the deltas start from (the newest before the one being published). */
  baseSeq: number
  /** Changed files of the new version (path → size and chunks): small ones get a delta each, large ones one per new chunk. */
  changed: Map<string, { size: number, chunks: ChunkRef[] }>
  /** Paths of the base version that the new one no longer has (their signatures are forgotten). */
  gone?: ReadonlySet<string>
  /** The new version's manifest chunks (already in the catalog): their deltas against the base manifest are stored too. */
  manifestChunks?: ChunkRef[]
  index: ChunkIndex
  catalog: Catalog
  signal?: AbortSignal
}

export async function computeDeltas (o: ComputeDeltasOptions): Promise<DeltaStats> {
  const started = Date.now()
  const stats: DeltaStats = { candidates: 0, stored: 0, baseUnavailable: 0, baseFromRealPath: 0, fromSignatures: 0, signaturesForgotten: 0, targetBytes: 0, deltaBytes: 0, chunks: { files: 0, candidates: 0, stored: 0, baseUnavailable: 0, targetBytes: 0, deltaBytes: 0 }, ms: 0 }
  const version = await o.catalog.getVersion(o.tree, o.baseSeq)
  const rootBytes = version === undefined ? undefined : await o.catalog.getBlob(openEnvelope(version.envelope).rootHash)
  if (rootBytes === undefined) return stats
  const baseRoot = decodeRoot(rootBytes)
  if (o.manifestChunks !== undefined) stats.manifest = await computeManifestDeltas(o.catalog, baseRoot.chunks, o.manifestChunks, o.signal)
  // a rescan changes no file: no reason to read the whole base manifest
  if (o.changed.size === 0) { stats.ms = Date.now() - started; return stats }
  // chunks of the new version's changed files keep their signatures: they are the next publish's bases
  const keep = new Set<string>()
  for (const t of o.changed.values()) for (const c of t.chunks) keep.add(toHex(c.id))
  const replaced: ChunkId[] = []
  for await (const base of readManifestEntries(o.catalog, baseRoot, o.signal)) {
    if (base.type !== 'file') continue
    // only small files have signatures (signatures.ts)
    const signed = !isLarge(base.size)
    if (o.gone?.has(base.path) === true) { if (signed) for (const c of base.chunks) replaced.push(c.id); continue }
    const target = o.changed.get(base.path)
    if (target === undefined || sameChunks(base, target.chunks)) continue
    if (signed) for (const c of base.chunks) replaced.push(c.id)
    if (isLarge(base.size) || isLarge(target.size)) {
      const basePath = version?.realPath === undefined ? undefined : join(version.realPath, base.path)
      await computeChunkDeltas({ base, target, basePath, index: o.index, catalog: o.catalog, stats: stats.chunks, signal: o.signal })
      continue
    }
    if (hasHole(base.chunks) || hasHole(target.chunks)) continue
    stats.candidates++
    let baseBytes = await readAll(o.index, base.chunks, o.signal)
    if (baseBytes === undefined && version?.realPath !== undefined) {
      baseBytes = await readFileVerified(join(version.realPath, base.path), base.chunks)
      if (baseBytes !== undefined) stats.baseFromRealPath++
    }
    // without a base or its signatures there is no delta: the target is not read for nothing
    const signatures = baseBytes === undefined ? await signaturesOf(o.catalog, base.chunks) : undefined
    if (baseBytes === undefined && signatures === undefined) { stats.baseUnavailable++; continue }
    const targetBytes = await readAll(o.index, target.chunks, o.signal)
    if (targetBytes === undefined) { stats.baseUnavailable++; continue }
    const inBase = new Set(base.chunks.map(c => toHex(c.id)))
    const lacking = target.chunks.filter(c => !inBase.has(toHex(c.id))).reduce((n, c) => n + c.size, 0)
    let delta: Uint8Array | undefined
    if (baseBytes !== undefined) {
      delta = encodeDelta(baseBytes, targetBytes)
    } else if (signatures !== undefined) {
      delta = encodeDeltaFromSignatures(signatures, targetBytes, Math.floor(lacking * KEEP_RATIO))
      if (delta !== undefined) stats.fromSignatures++
    }
    if (delta === undefined || delta.byteLength > lacking * KEEP_RATIO) continue
    await o.catalog.putDelta(deltaKeyOf(base.chunks.map(c => c.id), target.chunks.map(c => c.id)), delta)
    stats.stored++
    stats.targetBytes += lacking
    stats.deltaBytes += delta.byteLength
  }
  stats.signaturesForgotten = await forgetSignatures(o.catalog, replaced, keep)
  stats.ms = Date.now() - started
  return stats
}

/** Each chunk's size and stored signature (empty below a block), or undefined if one is missing. */
async function signaturesOf (catalog: Pick<Catalog, 'getSignatures'>, chunks: ChunkRef[]): Promise<Array<{ size: number, signature: Uint8Array }> | undefined> {
  const signed = chunks.filter(c => c.size >= SIG_BLOCK)
  const stored = await catalog.getSignatures(signed.map(c => c.id))
  if (stored.some(s => s === undefined)) return undefined
  let k = 0
  return chunks.map(c => ({ size: c.size, signature: c.size < SIG_BLOCK ? new Uint8Array(0) : stored[k++] as Uint8Array }))
}

function sameChunks (a: ManifestEntry & { type: 'file' }, b: ChunkRef[]): boolean {
  return a.chunks.length === b.length && a.chunks.every((c, i) => toHex(c.id) === toHex((b[i] as ChunkRef).id))
}

