// One LevelDB per agent. Every table lives in the same database under a one-byte key prefix, so a
// multi-table update (a location in both directions, a root and its counter) is one atomic batch.
//
// Key layout (all integers big-endian, so byte order = numeric order; '\0' ends strings, which valid
// relative paths, tree names and absolute paths never contain):
//
//   0x01 META      0x01 'nextRootId'                                   → u32            root id counter
//   0x02 ROOT      0x02 rootId:u32                                     → JSON StoreRoot (without id)
//   0x03 LOC       0x03 chunkId:32 rootId:u32 relPath '\0' offset:u64  → size:u32       chunk → where it lies
//   0x04 FILE      0x04 rootId:u32 relPath '\0' offset:u64 chunkId:32  → size:u32       file → its chunks
//   0x05 STAMP     0x05 rootId:u32 relPath '\0'                          → stamp:40 (or 72) the file's stamp when its chunks were known good
//   0x10 BLOB      0x10 blobId:32                                      → raw bytes      root blobs, manifest chunks
//   0x11 TREE      0x11 name                                           → JSON TreeRecord
//   0x12 VERSION   0x12 tree '\0' seq:u64                              → msgpack VersionRecord
//   0x13 SCAN      0x13 sourcePath '\0' relPath                        → msgpack ScanCacheEntry
//   0x14 STATE     0x14 key                                            → JSON value
//   0x15 DELTA     0x15 deltaKey:32                                    → encoded delta
//   0x16 SIG       0x16 chunkId:32                                     → block signatures of the chunk
//
// LOC and FILE hold the same tuples in two orders: LOC answers has()/locations() with one prefix scan by
// chunk id; FILE lets indexFile/removeFile/removeRoot find a file's or a root's locations without a full scan.
// Every write keeps the two in step (each LOC key has exactly one FILE key and vice versa). A file's STAMP
// (agent/fs/file-stamp.ts) goes in the batch that records its locations, or later once they are verified, and
// every write that changes them deletes it: a stamp only ever vouches for the locations recorded with it.
import { Level } from 'level'
import { StoreLockedError, StoreOpenError } from './errors.js'
import { pathToBytes } from '../../protocol/paths.js'

export type StoreDb = Level<Buffer, Buffer>

export const PREFIX = {
  META: 0x01,
  ROOT: 0x02,
  LOC: 0x03,
  FILE: 0x04,
  /** A file's stamp (device, inode, size, mtime, ctime) when its indexed chunks were known good: reads skip the re-hash while it holds. */
  STAMP: 0x05,
  BLOB: 0x10,
  TREE: 0x11,
  VERSION: 0x12,
  SCAN: 0x13,
  STATE: 0x14,
  /** Small-file deltas by delta key (protocol/delta.ts): computed once per version by a publisher. */
  DELTA: 0x15,
  /** Block signatures of a published chunk (protocol/signature-delta.ts), by chunk id: a delta base whose bytes the source overwrote. */
  SIG: 0x16,
} as const

/** Operations per batch when deleting an unbounded range (a root with millions of locations). */
export const DELETE_BATCH = 10_000

export async function openDb (dbPath: string): Promise<StoreDb> {
  const db = new Level<Buffer, Buffer>(dbPath, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  try {
    // A process killed without close() leaves its LOCK file behind, but LevelDB's lock is an fcntl lock
    // that dies with the process, so reopening needs nothing special; a live holder shows as LEVEL_LOCKED.
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: unknown } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new StoreLockedError(dbPath, { cause: err })
    throw new StoreOpenError(dbPath, { cause: (cause instanceof Error ? cause : err) })
  }
  return db
}

/** Concatenates a one-byte table prefix and key parts. */
export function key (prefix: number, ...parts: Array<Uint8Array | string>): Buffer {
  // strings as their bytes: a path may hold escaped bytes (protocol/paths.ts), which UTF-8 would mangle
  const bufs = parts.map(p => typeof p === 'string' ? pathToBytes(p) : p)
  let length = 1
  for (const b of bufs) length += b.byteLength
  const out = Buffer.allocUnsafe(length)
  out[0] = prefix
  let at = 1
  for (const b of bufs) { out.set(b, at); at += b.byteLength }
  return out
}

export const NUL = Buffer.from([0])

export function u32 (n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n)
  return b
}

/** Offsets and seqs reach past 2^32 (MAX_FILE_SIZE is 2^50); two u32 halves keep them exact without BigInt. */
export function u64 (n: number): Buffer {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`Not a non-negative safe integer: ${n}`)
  const b = Buffer.allocUnsafe(8)
  b.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 0)
  b.writeUInt32BE(n >>> 0, 4)
  return b
}

export function readU64 (b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x1_0000_0000 + b.readUInt32BE(at + 4)
}

/** The smallest key greater than every key starting with `prefix` (for `lt` bounds). */
export function prefixEnd (prefix: Buffer): Buffer {
  const end = Buffer.from(prefix)
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] !== 0xff) { end[i] = (end[i] ?? 0) + 1; return end.subarray(0, i + 1) }
  }
  throw new RangeError('A prefix of only 0xff bytes has no end')
}

export function range (prefix: Buffer): { gte: Buffer, lt: Buffer } {
  return { gte: prefix, lt: prefixEnd(prefix) }
}

/**
 * Deletes every key under `prefix` in batches of DELETE_BATCH, plus whatever `also(key)` says goes with it
 * (the mirror key of another table) in the same batch, so each pair disappears together.
 */
export async function deleteRange (db: StoreDb, prefix: Buffer, also?: (key: Buffer) => Buffer | undefined, keep?: (key: Buffer) => boolean): Promise<number> {
  let deleted = 0
  const it = db.keys(range(prefix))
  try {
    for (;;) {
      const keys = await it.nextv(DELETE_BATCH)
      if (keys.length === 0) break
      const ops: Array<{ type: 'del', key: Buffer }> = []
      for (const k of keys) {
        if (keep?.(k) === true) continue
        ops.push({ type: 'del', key: k })
        const other = also?.(k)
        if (other !== undefined) ops.push({ type: 'del', key: other })
        deleted++
      }
      if (ops.length > 0) await db.batch(ops)
    }
  } finally {
    await it.close()
  }
  return deleted
}

export function encodeJson (value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8')
}

export function decodeJson (bytes: Buffer): unknown {
  return JSON.parse(bytes.toString('utf8'))
}

export function isRecord (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function isNonNegInt (v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
}
