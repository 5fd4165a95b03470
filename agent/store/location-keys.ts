// Key codecs of the two location tables (layout in db.ts):
//   LOC   0x03 chunkId:32 rootId:u32 relPath '\0' offset:u64  → size:u32
//   FILE  0x04 rootId:u32 relPath '\0' offset:u64 chunkId:32  → size:u32
// Both hold the same tuple, so each key converts to its mirror by moving bytes, without decoding the path.
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import type { ChunkId } from '../../protocol/chunk-id.js'
import { bytesToPath } from '../../protocol/paths.js'
import type { ChunkLocation } from './types.js'
import { PREFIX, readU64, u32, u64 } from './db.js'
import { StoreCorruptError } from './errors.js'

const ID = CHUNK_ID_BYTES
const LOC_PATH_AT = 1 + ID + 4
const FILE_PATH_AT = 1 + 4

export function locPrefix (id: ChunkId): Buffer {
  const k = Buffer.allocUnsafe(1 + ID)
  k[0] = PREFIX.LOC
  k.set(id, 1)
  return k
}

export function rootFilesPrefix (rootId: number): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.FILE), u32(rootId)])
}

/** Prefix of one file's FILE keys; the '\0' keeps 'a' from matching 'a/b' or 'ab'. */
export function filePrefix (rootId: number, relPath: Buffer): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.FILE), u32(rootId), relPath, Buffer.of(0)])
}

export function locKey (id: ChunkId, rootId: number, relPath: Buffer, offset: number): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.LOC), id, u32(rootId), relPath, Buffer.of(0), u64(offset)])
}

export function fileKey (rootId: number, relPath: Buffer, offset: number, id: ChunkId): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.FILE), u32(rootId), relPath, Buffer.of(0), u64(offset), id])
}

export function sizeValue (size: number): Buffer {
  return u32(size)
}

export function decodeSize (v: Buffer): number {
  if (v.length !== 4) throw new StoreCorruptError('LOC', `size value of ${v.length} bytes`)
  return v.readUInt32BE(0)
}

export interface DecodedLoc {
  id: ChunkId
  location: ChunkLocation
}

export function decodeLocKey (k: Buffer, size: number): DecodedLoc {
  const nul = k.indexOf(0, LOC_PATH_AT)
  if (k[0] !== PREFIX.LOC || nul < 0 || k.length !== nul + 9) throw new StoreCorruptError('LOC', `malformed key ${k.toString('hex').slice(0, 120)}`)
  return {
    id: k.subarray(1, 1 + ID),
    location: { rootId: k.readUInt32BE(1 + ID), relPath: bytesToPath(k.subarray(LOC_PATH_AT, nul)), offset: readU64(k, nul + 1), size },
  }
}

/** LOC key → its FILE mirror. */
export function locToFile (k: Buffer): Buffer {
  const nul = k.indexOf(0, LOC_PATH_AT)
  if (k[0] !== PREFIX.LOC || nul < 0 || k.length !== nul + 9) throw new StoreCorruptError('LOC', `malformed key ${k.toString('hex').slice(0, 120)}`)
  const out = Buffer.allocUnsafe(k.length)
  out[0] = PREFIX.FILE
  k.copy(out, 1, 1 + ID, k.length) // rootId, path, NUL, offset
  k.copy(out, k.length - ID, 1, 1 + ID) // id last
  return out
}

/** FILE key → its LOC mirror. */
export function fileToLoc (k: Buffer): Buffer {
  const nul = k.indexOf(0, FILE_PATH_AT)
  if (k[0] !== PREFIX.FILE || nul < 0 || k.length !== nul + 9 + ID) throw new StoreCorruptError('FILE', `malformed key ${k.toString('hex').slice(0, 120)}`)
  const out = Buffer.allocUnsafe(k.length)
  out[0] = PREFIX.LOC
  k.copy(out, 1, k.length - ID) // id first
  k.copy(out, 1 + ID, 1, k.length - ID) // rootId, path, NUL, offset
  return out
}
