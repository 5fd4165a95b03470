// Deltas of single chunks of large files. A file above MAX_DELTA_TARGET_BYTES gets no whole-file delta (the
// receiver would rebuild it in memory), yet an edited line in an 8 MB test vector file changes ~50 KiB chunks
// all the same (openssl 3.0.20 → 3.0.22: 27 chunks, 1.45 MB, for ~3 KB of edits). Each new chunk of such a
// file gets a delta against a window of the same path's previous content — the old chunks its run of new
// chunks replaced (protocol/manifest-delta.ts deltaBases, as for manifest chunks) — so memory stays at a
// window plus a chunk.
// Keys: deltaKeyOf(window ids, [target chunk id]); same protocol, same store, same checks as every delta.
import { constants as fsConstants } from 'node:fs'
import { open } from 'node:fs/promises'
import { chunkIdOf, idsEqual, toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { applyDeltaVerified, encodeDeltaWithin } from '../../protocol/delta.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import type { ChunkRef, FileEntry } from '../../protocol/manifest.js'
import { MAX_DELTA_TARGET_BYTES } from '../../protocol/wire-limits.js'
import type { Catalog, ChunkIndex } from '../store/types.js'
import type { Logger } from '../core/log.js'
import { looksIncompressible } from '../chunk/entropy.js'
import { deltaPairs, type Pair } from './manifest-delta.js'
import { hasHole, readAll } from './read-chunks.js'
import { fsPath } from '../../protocol/paths.js'

/**
 * Kept only if at most this share of the target chunk: a delta costs the subscriber a base read and the
 * publisher a stored key, but a boundary chunk that is half old bytes saves half a chunk, and those are most
 * of what a delta can win on an image of compressed packages (measured on the bench's ISO: 0.5 kept 37 of
 * 1,409 new chunks; 0.9 with gap windows 76, 0.53 MB less).
 */
const KEEP_RATIO = 0.9
/**
 * Chunks inside a run of new chunks (not next to a shared one) are new content more often than edits (an
 * image of new packages): once GIVE_UP_AFTER of one kind were tried with fewer than 1 in MIN_KEPT_SHARE paying,
 * the file's others of that kind are not tried. The kinds are counted apart because they differ: compressible
 * chunks (text, directory records) usually pay, random-level ones (package payloads) almost never do.
 * Chunks at the edge of a run are always tried: they are where old bytes meet new ones.
 */
const GIVE_UP_AFTER = 8
const MIN_KEPT_SHARE = 4

/** Tries and successes of one kind of chunk within one file. */
class TryRecord {
  tried = 0
  kept = 0
  get exhausted (): boolean { return this.tried >= GIVE_UP_AFTER && this.kept * MIN_KEPT_SHARE < this.tried }
}

export const isLarge = (size: number): boolean => size > MAX_DELTA_TARGET_BYTES

/** deltaPairs of a large file, less those with a hole as target or in the base window (holes are no delta's). */
function chunkPairs (prev: ChunkRef[], next: ChunkRef[]): Pair[] {
  return deltaPairs(prev, next).filter(p => !hasHole([p.target]) && !hasHole(p.base))
}

/** Where each chunk of a file's list first lies (hex id → offset), for reading runs of it by id. */
function offsetsOf (all: ChunkRef[]): Map<string, number> {
  let offset = 0
  const at = new Map<string, number>()
  for (const c of all) { const hex = toHex(c.id); if (!at.has(hex)) at.set(hex, offset); offset += c.size }
  return at
}

/** Reads `run` (a contiguous run of the file's chunk list, located by `at`) from `path`, checking each hash; undefined on any mismatch. */
async function readRun (path: string, at: Map<string, number>, run: ChunkRef[], signal?: AbortSignal): Promise<Buffer | undefined> {
  let fh
  try { fh = await open(fsPath(path), fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW) } catch { return undefined }
  try {
    const parts: Buffer[] = []
    for (const c of run) {
      signal?.throwIfAborted()
      const b = Buffer.allocUnsafe(c.size)
      const { bytesRead } = await fh.read(b, 0, c.size, at.get(toHex(c.id)) ?? -1)
      if (bytesRead !== c.size || !idsEqual(chunkIdOf(b), c.id)) return undefined
      parts.push(b)
    }
    return Buffer.concat(parts)
  } catch {
    signal?.throwIfAborted()
    return undefined // unreadable (gone, truncated, replaced): no base, plain chunks serve this file
  } finally {
    await fh.close()
  }
}

export interface ChunkDeltaStats { files: number, candidates: number, stored: number, baseUnavailable: number, targetBytes: number, deltaBytes: number }

/**
 * Publisher: chunk deltas of a large changed file against its previous content (`base`), read through the
 * index, else from `basePath` (where the previous version's source really was), every chunk re-hashed.
 */
export async function computeChunkDeltas (o: { base: FileEntry, target: { chunks: ChunkRef[] }, basePath?: string, index: Pick<ChunkIndex, 'readChunk'>, catalog: Pick<Catalog, 'putDelta'>, stats: ChunkDeltaStats, signal?: AbortSignal }): Promise<void> {
  o.stats.files++
  const inside = { compressible: new TryRecord(), random: new TryRecord() }
  // built on the first read from basePath, once per file: it was rebuilt per try (11,000 ids hexed each time on an image)
  let at: Map<string, number> | undefined
  for (const p of chunkPairs(o.base.chunks, o.target.chunks)) {
    o.signal?.throwIfAborted()
    const target = await o.index.readChunk(p.target.id, o.signal)
    if (target === undefined) { o.stats.candidates++; o.stats.baseUnavailable++; continue }
    const incompressible = looksIncompressible(target)
    const record = p.atEdge ? undefined : incompressible ? inside.random : inside.compressible
    if (record?.exhausted === true) continue
    o.stats.candidates++
    const base = await readAll(o.index, p.base, o.signal) ?? (o.basePath === undefined ? undefined : await readRun(o.basePath, at ??= offsetsOf(o.base.chunks), p.base, o.signal))
    if (base === undefined) { o.stats.baseUnavailable++; continue }
    if (record !== undefined) record.tried++
    const delta = encodeDeltaWithin(base, target, Math.floor(target.byteLength * KEEP_RATIO), incompressible)
    if (delta === undefined) continue
    await o.catalog.putDelta(p.key, delta)
    if (record !== undefined) record.kept++
    o.stats.stored++
    o.stats.targetBytes += target.byteLength
    o.stats.deltaBytes += delta.byteLength
  }
}

export interface ChunkDeltaPhaseResult { asked: number, applied: number, rejected: number, deltaBytes: number, chunkBytes: number }

/**
 * Subscriber: for each large planned file that the version we hold also has (same path), asks for the deltas
 * of its missing chunks, rebuilds each from our own copy of the window (read through the index, re-hashed),
 * and fills the chunks whose hash matches. Whatever does not verify stays in `missing` (fetched plainly).
 */
export async function runChunkDeltaPhase (o: {
  missing: Set<string>
  targets: FileEntry[]
  previous: Map<string, FileEntry>
  index: Pick<ChunkIndex, 'readChunk'>
  catalog: Pick<Catalog, 'putDelta'>
  fetchDeltas: (keys: Uint8Array[], signal: AbortSignal) => Promise<Map<string, Uint8Array>>
  fill: (id: ChunkId, bytes: Uint8Array) => Promise<boolean>
  onBadDelta?: (reason: string) => void
  log: Logger
  signal: AbortSignal
}): Promise<ChunkDeltaPhaseResult> {
  const result: ChunkDeltaPhaseResult = { asked: 0, applied: 0, rejected: 0, deltaBytes: 0, chunkBytes: 0 }
  const pairs = new Map<string, Pair>()
  for (const t of o.targets) {
    const prev = o.previous.get(t.path)
    if (prev === undefined || !isLarge(t.size)) continue
    for (const p of chunkPairs(prev.chunks, t.chunks)) if (o.missing.has(toHex(p.target.id))) pairs.set(toHex(p.key), p)
  }
  if (pairs.size === 0) return result
  result.asked = pairs.size
  let deltas: Map<string, Uint8Array>
  try {
    deltas = await o.fetchDeltas([...pairs.values()].map(p => p.key), o.signal)
  } catch (err) {
    o.signal.throwIfAborted()
    o.log.info({ err }, 'no chunk deltas from the peer asked; fetching plain chunks')
    return result
  }
  for (const [hex, delta] of deltas) {
    const p = pairs.get(hex)
    if (p === undefined || !o.missing.has(toHex(p.target.id))) continue
    const base = await readAll(o.index, p.base, o.signal)
    if (base === undefined) continue
    let rebuilt: Uint8Array
    try {
      rebuilt = applyDeltaVerified(base, delta, [p.target])
    } catch (err) {
      if (!(err instanceof InvalidMessageError)) throw err
      result.rejected++
      o.log.warn({ chunk: toHex(p.target.id), reason: err.message }, 'chunk delta rejected; the chunk is fetched plainly')
      o.onBadDelta?.(`bad chunk delta: ${err.message}`)
      continue
    }
    if (await o.fill(p.target.id, rebuilt)) {
      o.missing.delete(toHex(p.target.id))
      result.applied++
      result.deltaBytes += delta.byteLength
      result.chunkBytes += p.target.size
      await o.catalog.putDelta(p.key, delta)
    }
  }
  return result
}
