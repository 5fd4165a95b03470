// Files' stamps in the chunk index (STAMP table, db.ts; what a stamp is: agent/fs/file-stamp.ts), and the ones
// being served kept in memory, so that a read asks the database for its file's stamp once per file, not per
// chunk: the lookups of one event-loop turn go together in one getMany.
//
// A stamp is written only once the chunks recorded for its file are known to be its bytes, and deleted in
// the batch of any write that changes those locations. The cache is cleared on every such write; a lookup
// that raced a clear answers its own read (a stamp vouches only for the same inode, size and ctime, which a
// change to the file does not keep) but is not kept.
import { BOUND_STAMP_BYTES, STAMP_BYTES } from '../fs/file-stamp.js'
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import { readFileSync } from 'node:fs'
import { NUL, PREFIX, deleteRange, key, u32, type StoreDb } from './db.js'
import { BoundedMap } from '../core/bounded-map.js'

/** Stamps kept: ~150 B each → ~2.5 MiB, as many files as the location cache holds chunks. */
export const DEFAULT_CACHED_STAMPS = 16_384

const LOC_PATH_AT = 1 + CHUNK_ID_BYTES + 4

export function stampKey (rootId: number, relPath: Buffer): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.STAMP), u32(rootId), relPath, NUL])
}

export function rootStampsPrefix (rootId: number): Buffer {
  return Buffer.concat([Buffer.of(PREFIX.STAMP), u32(rootId)])
}

/** The STAMP key of a LOC key's file (LOC: 0x03 chunkId:32 rootId:u32 relPath '\0' offset:u64). */
export function stampKeyOfLoc (locKey: Buffer): Buffer {
  const nul = locKey.indexOf(0, LOC_PATH_AT)
  return Buffer.concat([Buffer.of(PREFIX.STAMP), locKey.subarray(1 + CHUNK_ID_BYTES, nul + 1)])
}

/** The STAMP key of a FILE key's file (FILE: 0x04 rootId:u32 relPath '\0' offset:u64 chunkId:32). */
export function stampKeyOfFile (fileKey: Buffer): Buffer {
  const nul = fileKey.indexOf(0, 1 + 4)
  return Buffer.concat([Buffer.of(PREFIX.STAMP), fileKey.subarray(1, nul + 1)])
}

const STAMPS_BOOT = key(PREFIX.META, 'stampsBoot')

/** This boot's id (Linux); undefined elsewhere, where every open forgets the stamps. */
export function bootId (): string | undefined {
  try { return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() } catch { return undefined }
}

/**
 * Stamps vouch for bytes as this boot's kernel had them: a power loss can lose data a stamp saw while its
 * inode (size, ctime) reached the disk, so after a reboot they are all forgotten (a publish records them
 * again; reads hash until then).
 */
export async function forgetStampsOfAnotherBoot (db: StoreDb, boot = bootId()): Promise<void> {
  const recorded = await db.get(STAMPS_BOOT)
  if (boot !== undefined && recorded?.toString('utf8') === boot) return
  await deleteRange(db, Buffer.of(PREFIX.STAMP))
  if (boot !== undefined) await db.put(STAMPS_BOOT, Buffer.from(boot, 'utf8'))
}

/** A value read back is a stamp only if it has a stamp's length (anything else vouches for nothing). */
function decode (v: Buffer | undefined): Buffer | null {
  return v !== undefined && (v.length === STAMP_BYTES || v.length === BOUND_STAMP_BYTES) ? v : null
}

export class StampCache {
  // insertion order: the first key is the oldest (dropped first); null: the file has no stamp
  private readonly entries: BoundedMap<string, Buffer | null>
  private generation = 0
  private pending: Array<{ key: Buffer, resolve: (v: Buffer | null) => void, reject: (err: unknown) => void }> = []

  constructor (private readonly db: StoreDb, maxEntries = DEFAULT_CACHED_STAMPS) {
    this.entries = new BoundedMap(maxEntries)
  }

  /** The stamp recorded for a file (by its STAMP key), or null. */
  async get (key: Buffer): Promise<Buffer | null> {
    const known = this.entries.get(key.toString('latin1'))
    if (known !== undefined) return known
    return await new Promise((resolve, reject) => {
      this.pending.push({ key, resolve, reject })
      if (this.pending.length === 1) setImmediate(() => { this.lookupPending().catch(() => {}) })
    })
  }

  /** Stamps were written or deleted: forget them all, and whatever a lookup under way brings back. */
  invalidate (): void {
    this.generation++
    this.entries.clear()
  }

  /** Writes stamps that differ from the recorded ones (a publish re-stamps every unchanged file: mostly none). */
  async record (stamps: Array<[key: Buffer, stamp: Buffer]>): Promise<void> {
    if (stamps.length === 0) return
    const old = await this.db.getMany(stamps.map(([k]) => k))
    const batch = this.db.batch()
    stamps.forEach(([k, stamp], i) => { if (old[i]?.equals(stamp) !== true) batch.put(k, stamp) })
    if (batch.length === 0) { await batch.close(); return }
    await batch.write()
    this.invalidate()
  }

  private async lookupPending (): Promise<void> {
    const lookups = this.pending
    this.pending = []
    const epoch = this.generation
    let values: Array<Buffer | undefined>
    try {
      values = await this.db.getMany(lookups.map(l => l.key))
    } catch (err) {
      for (const l of lookups) l.reject(err)
      return
    }
    lookups.forEach((l, i) => {
      const stamp = decode(values[i])
      if (epoch === this.generation) this.set(l.key.toString('latin1'), stamp)
      l.resolve(stamp)
    })
  }

  private set (key: string, stamp: Buffer | null): void {
    this.entries.set(key, stamp)
  }
}
