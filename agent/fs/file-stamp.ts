import type { BigIntStats } from 'node:fs'

// A file's stamp: what the kernel says about its identity and last change, exactly (docs/design-notes.md
// "Serving without re-hashing"). Recorded when the chunks indexed in a file are known to be its bytes; a
// read that finds the same stamp serves its chunk without re-hashing it, any difference means hash as before.
//
//   dev:u64 ino:u64 size:u64 mtimeNs:i64 ctimeNs:i64                (40 bytes: vouches for every chunk of the file)
//   dev:u64 ino:u64 size:u64 mtimeNs:i64 ctimeNs:i64 chunkId:32     (72 bytes: for that one chunk, the whole file)
//
// ctime is the part that matters: every write, truncate, chmod, link, rename onto it or utimes sets it to
// the kernel's clock, and no system call sets it to a chosen value (utimes sets mtime, then ctime to now).

export const STAMP_BYTES = 40
export const BOUND_STAMP_BYTES = STAMP_BYTES + 32

/**
 * A stamp whose ctime is this close to now (or later) is not recorded: timestamps come from a coarse clock
 * (a tick of 1–10 ms on Linux, 2 s on FAT's mtime), so a write in the same tick as the stamp's would leave
 * it unchanged — git's "racily clean" problem, and the scanner's RACY_MTIME_WINDOW_MS.
 */
export const RACY_STAMP_MS = 2000

export function stampOf (st: BigIntStats): Buffer {
  const b = Buffer.alloc(STAMP_BYTES) // not from the pool: it crosses to the caller's thread
  b.writeBigUInt64BE(BigInt.asUintN(64, st.dev), 0)
  b.writeBigUInt64BE(BigInt.asUintN(64, st.ino), 8)
  b.writeBigUInt64BE(BigInt.asUintN(64, st.size), 16)
  b.writeBigInt64BE(BigInt.asIntN(64, st.mtimeNs), 24)
  b.writeBigInt64BE(BigInt.asIntN(64, st.ctimeNs), 32)
  return b
}

/** The file's size in a stamp. */
export function stampSize (stamp: Uint8Array): number {
  return Number(Buffer.from(stamp.buffer, stamp.byteOffset, stamp.byteLength).readBigUInt64BE(16))
}

/** True when the stamp's ctime is old enough (RACY_STAMP_MS before `nowMs`) to be recorded. */
export function settled (stamp: Uint8Array, nowMs: number): boolean {
  const ctimeNs = Buffer.from(stamp.buffer, stamp.byteOffset, stamp.byteLength).readBigInt64BE(32)
  return ctimeNs < BigInt(Math.floor(nowMs - RACY_STAMP_MS)) * 1_000_000n
}

/** A stamp for one chunk only: the file at `stamp` is exactly the chunk `id`. */
export function bindStamp (stamp: Uint8Array, id: Uint8Array): Buffer {
  return Buffer.concat([stamp, id])
}

/**
 * Whether `recorded` vouches for chunk `id` of a file whose stamp is now `current`: the same 40 bytes, and
 * for a bound stamp the same chunk. Anything malformed vouches for nothing.
 */
export function vouches (recorded: Uint8Array | undefined, current: Uint8Array, id: Uint8Array): boolean {
  if (recorded === undefined || current.byteLength !== STAMP_BYTES) return false
  if (recorded.byteLength !== STAMP_BYTES && recorded.byteLength !== BOUND_STAMP_BYTES) return false
  const r = Buffer.from(recorded.buffer, recorded.byteOffset, recorded.byteLength)
  if (r.compare(current, 0, STAMP_BYTES, 0, STAMP_BYTES) !== 0) return false
  return r.byteLength === STAMP_BYTES || r.compare(id, 0, 32, STAMP_BYTES, BOUND_STAMP_BYTES) === 0
}
