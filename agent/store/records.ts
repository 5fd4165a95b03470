// Decoders of the catalog's records: `unknown` from JSON or msgpack in, a checked domain type out.
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import type { GateRecord, HookCommand, PlacedChunk, ScanCacheEntry, TreeRecord, SkippedEntries, VersionRecord, VersionState, VersionStats } from './types.js'
import { isNonNegInt, isRecord } from './db.js'
import { StoreCorruptError } from './errors.js'

const STATES: ReadonlySet<string> = new Set<VersionState>(['announced', 'syncing', 'complete', 'failed'])
const STAT_FIELDS = ['files', 'bytes', 'chunks', 'newBytes', 'newChunks', 'durationMs'] as const

function isStringArray (v: unknown): v is string[] {
  return Array.isArray(v) && v.every(s => typeof s === 'string')
}

export function decodeTree (name: string, raw: unknown): TreeRecord {
  const bad = (why: string): StoreCorruptError => new StoreCorruptError('TREE', `tree ${name}: ${why}`)
  if (!isRecord(raw)) throw bad('not an object')
  const tree: TreeRecord = { name }
  const { currentSeq, subscribedTo, include, exclude, retain, seed, seedCopy } = raw
  if (currentSeq !== undefined) { if (!isNonNegInt(currentSeq)) throw bad('currentSeq'); tree.currentSeq = currentSeq }
  if (subscribedTo !== undefined) { if (typeof subscribedTo !== 'string') throw bad('subscribedTo'); tree.subscribedTo = subscribedTo }
  if (include !== undefined) { if (!isStringArray(include)) throw bad('include'); tree.include = include }
  if (exclude !== undefined) { if (!isStringArray(exclude)) throw bad('exclude'); tree.exclude = exclude }
  if (retain !== undefined) { if (!isNonNegInt(retain)) throw bad('retain'); tree.retain = retain }
  if (seed !== undefined) { if (typeof seed !== 'string') throw bad('seed'); tree.seed = seed }
  if (seedCopy !== undefined) { if (typeof seedCopy !== 'boolean') throw bad('seedCopy'); tree.seedCopy = seedCopy }
  const { allowEmpty, maxDropPercent } = raw
  if (allowEmpty !== undefined) { if (typeof allowEmpty !== 'boolean') throw bad('allowEmpty'); tree.allowEmpty = allowEmpty }
  if (maxDropPercent !== undefined) { if (typeof maxDropPercent !== 'number' || !(maxDropPercent >= 0 && maxDropPercent <= 100)) throw bad('maxDropPercent'); tree.maxDropPercent = maxDropPercent }
  if (raw.gate !== undefined) tree.gate = decodeHook(raw.gate, () => bad('gate'))
  if (raw.onVersion !== undefined) tree.onVersion = decodeHook(raw.onVersion, () => bad('onVersion'))
  return tree
}

function decodeHook (raw: unknown, bad: () => Error): HookCommand {
  if (!isRecord(raw) || !isStringArray(raw.argv) || raw.argv.length === 0 || !isNonNegInt(raw.timeoutMs)) throw bad()
  return { argv: raw.argv, timeoutMs: raw.timeoutMs }
}

const GATE_OUTCOMES: ReadonlySet<unknown> = new Set(['passed', 'refused', 'accepted'])

function decodeGate (raw: unknown, bad: (why: string) => Error): GateRecord {
  if (!isRecord(raw) || !GATE_OUTCOMES.has(raw.outcome) || typeof raw.durationMs !== 'number' || typeof raw.atMs !== 'number' || !isStringArray(raw.output)) throw bad('gate')
  const { reason, exitCode } = raw
  if (reason !== undefined && reason !== null && typeof reason !== 'string') throw bad('gate.reason')
  if (exitCode !== undefined && exitCode !== null && !Number.isInteger(exitCode)) throw bad('gate.exitCode')
  return { outcome: raw.outcome as GateRecord['outcome'], reason: reason ?? undefined, exitCode: exitCode as number | null | undefined, durationMs: raw.durationMs, atMs: raw.atMs, output: raw.output }
}

export function decodeVersion (tree: string, seq: number, raw: unknown): VersionRecord {
  const bad = (why: string): StoreCorruptError => new StoreCorruptError('VERSION', `${tree}#${seq}: ${why}`)
  if (!isRecord(raw)) throw bad('not a map')
  const { envelope, state, rootId, path, realPath, stats, error } = raw
  if (!(envelope instanceof Uint8Array)) throw bad('envelope is not bytes')
  if (typeof state !== 'string' || !STATES.has(state)) throw bad(`state ${String(state)}`)
  const version: VersionRecord = { tree, seq, envelope, state: state as VersionState }
  if (rootId !== undefined) { if (!isNonNegInt(rootId)) throw bad('rootId'); version.rootId = rootId }
  if (path !== undefined) { if (typeof path !== 'string') throw bad('path'); version.path = path }
  if (realPath !== undefined) { if (typeof realPath !== 'string') throw bad('realPath'); version.realPath = realPath }
  if (error !== undefined) { if (typeof error !== 'string') throw bad('error'); version.error = error }
  if (stats !== undefined) version.stats = decodeStats(stats, bad)
  const { selection, generation } = raw
  if (selection !== undefined) {
    if (!isRecord(selection) || (selection.include !== undefined && !isStringArray(selection.include)) || (selection.exclude !== undefined && !isStringArray(selection.exclude))) throw bad('selection')
    version.selection = { include: selection.include as string[] | undefined, exclude: selection.exclude as string[] | undefined }
  }
  if (generation !== undefined) { if (!isNonNegInt(generation)) throw bad('generation'); version.generation = generation }
  if (raw.skipped !== undefined) version.skipped = decodeSkipped(raw.skipped, bad)
  if (raw.gate !== undefined) version.gate = decodeGate(raw.gate, bad)
  const { unservable } = raw
  if (unservable !== undefined) {
    if (!isRecord(unservable) || !isNonNegInt(unservable.chunks) || !isStringArray(unservable.paths) || !isNonNegInt(unservable.sinceMs)) throw bad('unservable')
    version.unservable = { chunks: unservable.chunks, paths: unservable.paths, sinceMs: unservable.sinceMs }
  }
  return version
}

function decodeSkipped (raw: unknown, bad: (why: string) => Error): SkippedEntries {
  if (!isRecord(raw) || !isNonNegInt(raw.count) || !Array.isArray(raw.sample)) throw bad('skipped')
  const sample = raw.sample.map(s => {
    if (!isRecord(s) || typeof s.path !== 'string' || typeof s.kind !== 'string' || typeof s.reason !== 'string') throw bad('skipped.sample')
    return { path: s.path, kind: s.kind, reason: s.reason }
  })
  return { count: raw.count, sample }
}

function decodeStats (raw: unknown, bad: (why: string) => Error): VersionStats {
  if (!isRecord(raw)) throw bad('stats is not a map')
  const out: Partial<VersionStats> = {}
  for (const f of STAT_FIELDS) {
    const v = raw[f]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad(`stats.${f}`)
    out[f] = v
  }
  return out as VersionStats
}

/**
 * Compact form: ids concatenated in one byte string (a hole's id is 32 zero bytes like any other), sizes in an
 * array, offsets only when the chunks are not the contiguous run from 0 a chunker produces (then they are
 * implied by the sizes), `h: 1` when the file was cut as sparse.
 */
interface PackedScanEntry { s: number, m: number, c: number, i: number, ids: Uint8Array, z: number[], o?: number[], h?: 1 }

export function encodeScanEntry (e: ScanCacheEntry): PackedScanEntry {
  const ids = Buffer.allocUnsafe(e.chunks.length * CHUNK_ID_BYTES)
  const z: number[] = []
  let contiguous = true
  let next = 0
  e.chunks.forEach((c, n) => {
    if (c.id.byteLength !== CHUNK_ID_BYTES) throw new TypeError(`Scan cache chunk ${n}: id is not ${CHUNK_ID_BYTES} bytes`)
    ids.set(c.id, n * CHUNK_ID_BYTES)
    z.push(c.size)
    if (c.offset !== next) contiguous = false
    next = c.offset + c.size
  })
  const packed: PackedScanEntry = { s: e.size, m: e.mtimeMs, c: e.ctimeMs, i: e.ino, ids, z }
  if (!contiguous) packed.o = e.chunks.map(c => c.offset)
  if (e.sparse === true) packed.h = 1
  return packed
}

export function decodeScanEntry (raw: unknown): ScanCacheEntry {
  const bad = (why: string): StoreCorruptError => new StoreCorruptError('SCAN', why)
  if (!isRecord(raw)) throw bad('not a map')
  const { s, m, c, i, ids, z, o, h } = raw
  if (!isNonNegInt(s) || typeof m !== 'number' || typeof c !== 'number' || typeof i !== 'number') throw bad('size, mtime, ctime or ino')
  if (!(ids instanceof Uint8Array) || !Array.isArray(z) || ids.byteLength !== z.length * CHUNK_ID_BYTES) throw bad('chunk ids and sizes disagree')
  if (o !== undefined && (!Array.isArray(o) || o.length !== z.length)) throw bad('offsets and sizes disagree')
  if (h !== undefined && h !== 1) throw bad('sparse flag')
  const chunks: PlacedChunk[] = []
  let offset = 0
  for (let n = 0; n < z.length; n++) {
    const size: unknown = z[n]
    const at: unknown = o === undefined ? offset : o[n]
    if (!isNonNegInt(size) || !isNonNegInt(at)) throw bad(`chunk ${n} size or offset`)
    // Copy: a subarray would keep the whole decoded buffer alive for every chunk id handed out.
    chunks.push({ id: Uint8Array.prototype.slice.call(ids, n * CHUNK_ID_BYTES, (n + 1) * CHUNK_ID_BYTES), offset: at, size })
    offset = at + size
  }
  return { size: s, mtimeMs: m, ctimeMs: c, ino: i, chunks, ...(h === 1 ? { sparse: true } : {}) }
}
