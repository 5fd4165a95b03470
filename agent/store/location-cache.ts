// Where the chunks being served lie, in memory, so that serving a chunk costs no database lookup.
// A chunk server reads chunks in the order subscribers ask for them, which is mostly a file's chunks one
// after another (manifest order; with swarming each site asks for its own share of them, the others asking
// for the rest). Looking each one up in LevelDB cost a seek and a thread-pool round trip per chunk (~11 % of
// a serving publisher's CPU, profiled). Here, when a lookup finds a chunk in a file, the next chunks of that
// file are read from the FILE table at once (one iterator for up to READ_AHEAD_CHUNKS entries) and kept, so
// most lookups are answered from this map.
//
// A cached location is a hint, never trusted: the read at it re-hashes the bytes like any other, and a miss
// there falls back to the database (chunk-index.ts). Deleting locations clears the cache all the same, so
// that it does not keep sending reads to places that are gone; a read-ahead that raced a deletion is dropped.
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import { range, type StoreDb } from './db.js'
import { fileToLoc, locToFile } from './location-keys.js'

/** Locations kept: ~150 B each (LOC key, size, map entry) → ~2.5 MiB; ~850 MB of 52 KiB chunks being served. */
export const DEFAULT_CACHED_LOCATIONS = 16_384
/** FILE entries read after a chunk found by lookup: one iterator per this many chunks of a file read in order. */
export const READ_AHEAD_CHUNKS = 64

/** A LOC key and its size value, as the database holds them. */
export type LocationEntry = [key: Buffer, size: Buffer]

/** FILE key: 0x04 rootId:u32 relPath '\0' offset:u64 chunkId:32 — its file's prefix ends before the offset. */
const FILE_KEY_TAIL = 8 + CHUNK_ID_BYTES

const idKey = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')

export class LocationCache {
  // insertion order: the first key is the oldest (dropped first)
  private readonly entries = new Map<string, LocationEntry>()
  private generation = 0

  constructor (private readonly db: StoreDb, private readonly maxEntries = DEFAULT_CACHED_LOCATIONS) {}

  get size (): number { return this.entries.size }

  get (id: Uint8Array): LocationEntry | undefined {
    return this.entries.get(idKey(id))
  }

  /** Forgets one chunk's location (a read there failed: the database decides where it lies now). */
  forget (id: Uint8Array): void {
    this.entries.delete(idKey(id))
  }

  /** Locations were deleted: forget them all, and whatever a read-ahead under way brings back. */
  invalidate (): void {
    this.generation++
    this.entries.clear()
  }

  /** A token for remember(): entries looked up before an invalidate() must not be kept after it. */
  get epoch (): number { return this.generation }

  /**
   * Keeps the LOC entries found by a lookup (taken at `epoch`), then reads ahead the chunks that follow each in
   * its file (once per file per call). Rejects only for database errors, which cost nothing but the hint.
   */
  async remember (found: LocationEntry[], epoch: number): Promise<void> {
    if (epoch !== this.generation || this.maxEntries === 0) return
    for (const [key, size] of found) this.set(key.subarray(1, 1 + CHUNK_ID_BYTES), [key, size])
    const files = new Set<string>()
    for (const [key] of found) {
      const fileKey = locToFile(key)
      const filePrefix = fileKey.subarray(0, fileKey.length - FILE_KEY_TAIL)
      const name = filePrefix.toString('latin1')
      if (files.has(name)) continue
      files.add(name)
      const it = this.db.iterator({ gt: fileKey, lt: range(filePrefix).lt, limit: READ_AHEAD_CHUNKS })
      let page: Array<[Buffer, Buffer]>
      try {
        page = await it.nextv(READ_AHEAD_CHUNKS)
      } finally {
        await it.close()
      }
      if (epoch !== this.generation) return
      for (const [k, size] of page) this.set(k.subarray(k.length - CHUNK_ID_BYTES), [fileToLoc(k), size])
    }
  }

  private set (id: Uint8Array, entry: LocationEntry): void {
    const key = idKey(id)
    this.entries.delete(key)
    this.entries.set(key, entry)
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next()
      if (oldest.done !== true) this.entries.delete(oldest.value)
    }
  }
}
