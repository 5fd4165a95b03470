// Where the chunks being served lie, in memory, so that serving a chunk costs no database lookup.
// A chunk server reads chunks in the order subscribers ask for them, which is mostly a file's chunks one
// after another (manifest order; with swarming each site asks for its own share of them, the others asking
// for the rest). Looking each one up in LevelDB cost a seek and a thread-pool round trip per chunk (~11 % of
// a serving publisher's CPU, profiled). Here, when a lookup finds a chunk in a file, the chunks that follow it
// in the FILE table are read at once (one iterator for up to READ_AHEAD_CHUNKS entries) and kept, so most
// lookups are answered from this map. The read-ahead runs on past the end of the file into the next files of
// the same root: FILE keys are in path order, as manifests are, so a tree of small files — one chunk each, where
// a read-ahead within the file found nothing — costs one iterator per READ_AHEAD_CHUNKS files, not two per file.
//
// A cached location is a hint, never trusted: the read at it re-hashes the bytes like any other, and a miss
// there falls back to the database (chunk-index.ts). Deleting locations clears the cache all the same, so
// that it does not keep sending reads to places that are gone; a read-ahead that raced a deletion is dropped.
import { CHUNK_ID_BYTES } from '../../protocol/limits.js'
import { range, type StoreDb } from './db.js'
import { fileToLoc, locToFile } from './location-keys.js'
import { BoundedMap } from '../core/bounded-map.js'

/** Locations kept: ~150 B each (LOC key, size, map entry) → ~2.5 MiB; ~850 MB of 52 KiB chunks being served. */
export const DEFAULT_CACHED_LOCATIONS = 16_384
/** FILE entries read after a chunk found by lookup: one iterator per this many chunks of a root read in path order. */
export const READ_AHEAD_CHUNKS = 64

/** A LOC key and its size value, as the database holds them. */
export type LocationEntry = [key: Buffer, size: Buffer]

/** FILE key: 0x04 rootId:u32 relPath '\0' offset:u64 chunkId:32 — its root's prefix is the first 5 bytes. */
const FILE_KEY_ROOT_PREFIX = 1 + 4

const idKey = (id: Uint8Array): string => Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('latin1')

export class LocationCache {
  private readonly entries: BoundedMap<string, LocationEntry>
  private generation = 0

  constructor (private readonly db: StoreDb, private readonly maxEntries = DEFAULT_CACHED_LOCATIONS) {
    this.entries = new BoundedMap(maxEntries)
  }

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
   * Keeps the LOC entries found by a lookup (taken at `epoch`), then reads ahead the FILE entries that follow
   * each in its root (its file's next chunks, then the next files'); a found entry that an earlier read-ahead
   * of this call already passed is not read ahead again. Rejects only for database errors, which cost
   * nothing but the hint.
   */
  async remember (found: LocationEntry[], epoch: number): Promise<void> {
    if (epoch !== this.generation || this.maxEntries === 0) return
    for (const [key, size] of found) this.set(key.subarray(1, 1 + CHUNK_ID_BYTES), [key, size])
    const fileKeys = found.map(([key]) => locToFile(key)).sort(Buffer.compare)
    let coveredTo: Buffer | undefined // the last FILE key read ahead by this call
    for (const fileKey of fileKeys) {
      if (coveredTo !== undefined && Buffer.compare(fileKey, coveredTo) <= 0) continue
      const rootPrefix = fileKey.subarray(0, FILE_KEY_ROOT_PREFIX)
      const it = this.db.iterator({ gt: fileKey, lt: range(rootPrefix).lt, limit: READ_AHEAD_CHUNKS })
      let page: Array<[Buffer, Buffer]>
      try {
        page = await it.nextv(READ_AHEAD_CHUNKS)
      } finally {
        await it.close()
      }
      if (epoch !== this.generation) return
      // a chunk already known keeps its location (the one a lookup found; the same bytes found again in a
      // later file are no better a place to read them)
      for (const [k, size] of page) this.setIfAbsent(k.subarray(k.length - CHUNK_ID_BYTES), [fileToLoc(k), size])
      // a short page reached the root's end: nothing after this key either
      coveredTo = page.length < READ_AHEAD_CHUNKS ? range(rootPrefix).lt : page[page.length - 1]?.[0]
    }
  }

  private setIfAbsent (id: Uint8Array, entry: LocationEntry): void {
    if (!this.entries.has(idKey(id))) this.set(id, entry)
  }

  private set (id: Uint8Array, entry: LocationEntry): void {
    this.entries.set(idKey(id), entry)
  }
}
