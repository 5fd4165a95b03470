// The chunk index on LevelDB: chunk id → where the chunk already lies on disk ("the tree is the store").
// Reads re-hash what they find unless the file's stamp is the one recorded when its chunks were known good
// (file-stamps.ts), so a file edited, truncated or deleted behind our back is detected, its location
// dropped, and its bytes never returned. Key layout: db.ts and location-keys.ts.
import { isAbsolute, join, relative, sep } from 'node:path'
import { isChunkId, type ChunkId } from '../../protocol/chunk-id.js'
import { LimitExceededError } from '../../protocol/errors.js'
import { MAX_CHUNK_SIZE, MAX_CHUNKS_PER_FILE } from '../../protocol/limits.js'
import { pathToBytes, validateRelativePath } from '../../protocol/paths.js'
import { isHoleChunk } from '../../protocol/manifest.js'
import type { ChunkIndex, ChunkIndexEvents, ChunkLocation, PlacedChunk, StoreRoot } from './types.js'
import { PREFIX, deleteRange, key, range, u32, type StoreDb } from './db.js'
import { InvalidLocationError, UnknownRootError } from './errors.js'
import { FsBatch } from '../fs/fs-batch.js'
import { bindStamp, stampSize } from '../fs/file-stamp.js'
import { StampCache, forgetStampsOfAnotherBoot, rootStampsPrefix, stampKey, stampKeyOfLoc } from './file-stamps.js'
import { LocationCache } from './location-cache.js'
import { KeyedMutex } from './mutex.js'
import { decodeLocKey, decodeSize, fileKey, filePrefix, fileToLoc, locKey, locPrefix, locToFile, rootFilesPrefix, sizeValue } from './location-keys.js'
import { decodeRoot, encodeRoot, validateRootFields } from './roots.js'

export interface LevelChunkIndexEvents extends ChunkIndexEvents {
  /**
   * A location could not be read for a reason that says nothing about its content (EACCES, EMFILE, EIO):
   * it is kept, skipped for this read, and reported here so the failure is not silent.
   */
  onReadError?: (id: ChunkId, location: ChunkLocation, error: Error) => void
}

export interface LevelChunkIndexInit {
  /** Chunk locations kept in memory for reads (default DEFAULT_CACHED_LOCATIONS; 0: none). */
  cachedLocations?: number
}

const NEXT_ROOT_ID = key(PREFIX.META, 'nextRootId')

/** Open errors that mean "the file is not there any more" rather than "cannot read it right now". */
const GONE_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'ELOOP'])

type Attempt = { kind: 'ok', bytes: Buffer } | { kind: 'corrupt', reason: string } | { kind: 'error', error: Error }

export class LevelChunkIndex implements ChunkIndex {
  /**
   * Reads and re-hashes chunks in a worker thread (FsBatch 'read' steps), the reads of one event-loop turn
   * together, each file opened once per batch. Its own worker: a read never waits behind a build's writes.
   */
  private readonly reader = new FsBatch()
  /** Locations of the chunks being read, and of those after them in their files (location-cache.ts). */
  private readonly nearby: LocationCache
  /** The recorded stamps of the files being read (file-stamps.ts). */
  private readonly stamps: StampCache
  readonly readStats = { hashed: 0, trusted: 0 } // chunks read: re-hashed, or served on their file's stamp
  /** The read-ahead under way, if any: a read that misses the cache waits for it before looking up. */
  private readingAhead?: Promise<void>
  private readonly fileLocks = new KeyedMutex()
  private readonly inFlight = new Set<Promise<unknown>>()
  /** Location puts waiting for the write under way to finish (see putLocations). */
  private locationQueue: { puts: Array<[Buffer, Buffer]>, dels: Buffer[], waiters: Array<{ resolve: () => void, reject: (err: unknown) => void }> } = { puts: [], dels: [], waiters: [] }
  private writingLocations = false
  /** Lookups of a chunk's first location waiting to be done together (see firstLocation). */
  private pendingLookups: Array<{ id: ChunkId, resolve: (found: [Buffer, Buffer] | undefined) => void, reject: (err: unknown) => void }> = []

  private constructor (
    private readonly db: StoreDb,
    private readonly roots: Map<number, StoreRoot>,
    private nextRootId: number,
    private readonly events: LevelChunkIndexEvents,
    init: LevelChunkIndexInit,
  ) {
    this.nearby = new LocationCache(db, init.cachedLocations)
    this.stamps = new StampCache(db, init.cachedLocations)
  }

  /** Loads the (few) roots into memory: every read and write needs its root, and only this object changes them. */
  static async open (db: StoreDb, events: LevelChunkIndexEvents = {}, init: LevelChunkIndexInit = {}): Promise<LevelChunkIndex> {
    const roots = new Map<number, StoreRoot>()
    let maxId = 0
    for await (const [k, v] of db.iterator(range(Buffer.of(PREFIX.ROOT)))) {
      const root = decodeRoot(k, v)
      roots.set(root.id, root)
      maxId = Math.max(maxId, root.id)
    }
    const counter = await db.get(NEXT_ROOT_ID)
    // Concurrent addRoot batches may land out of order, so the counter alone could lag the largest id.
    const next = Math.max(counter === undefined ? 1 : counter.readUInt32BE(0), maxId + 1)
    await forgetStampsOfAnotherBoot(db)
    return new LevelChunkIndex(db, roots, next, events, init)
  }

  async addRoot (fields: Omit<StoreRoot, 'id'>): Promise<StoreRoot> {
    validateRootFields(fields)
    const root: StoreRoot = { ...fields, id: this.nextRootId++ }
    await this.db.batch()
      .put(key(PREFIX.ROOT, u32(root.id)), encodeRoot(root))
      .put(NEXT_ROOT_ID, u32(this.nextRootId))
      .write()
    this.roots.set(root.id, root)
    return { ...root }
  }

  async getRoot (id: number): Promise<StoreRoot | undefined> {
    const root = this.roots.get(id)
    return root === undefined ? undefined : { ...root }
  }

  async listRoots (): Promise<StoreRoot[]> {
    return [...this.roots.values()].sort((a, b) => a.id - b.id).map(r => ({ ...r }))
  }

  async updateRoot (root: StoreRoot): Promise<void> {
    if (!this.roots.has(root.id)) throw new UnknownRootError(root.id)
    validateRootFields(root)
    await this.db.put(key(PREFIX.ROOT, u32(root.id)), encodeRoot(root))
    this.roots.set(root.id, { ...root })
  }

  async removeRoot (id: number): Promise<void> {
    // Forget it first: new writes under it fail and reads drop what is left, while the range is deleted in
    // batches (a root can hold millions of locations). The record goes last, so a crash midway leaves a
    // root that removeRoot can simply be called on again.
    this.roots.delete(id)
    this.nearby.invalidate()
    await deleteRange(this.db, rootFilesPrefix(id), fileToLoc)
    await deleteRange(this.db, rootStampsPrefix(id))
    this.stamps.invalidate()
    await this.db.del(key(PREFIX.ROOT, u32(id)))
  }

  async indexFile (rootId: number, relPath: string, chunks: PlacedChunk[], stamp?: Uint8Array): Promise<void> {
    const path = this.checkFile(rootId, relPath)
    if (chunks.length > MAX_CHUNKS_PER_FILE) throw new LimitExceededError('chunks per file', chunks.length, MAX_CHUNKS_PER_FILE)
    for (const c of chunks) checkPlacement(relPath, c.id, c.offset, c.size)
    const data = chunks.filter(c => !isHoleChunk(c.id))
    await this.fileLocks.run(`${rootId}/${relPath}`, async () => {
      const old = await this.db.keys(range(filePrefix(rootId, path))).all()
      // removeRoot may have run while we waited; writing now would leave locations under a dead root.
      if (!this.roots.has(rootId)) throw new UnknownRootError(rootId)
      // A publish re-indexes every file, unchanged ones included: write only the difference, so an
      // unchanged file costs one key scan and no write. (Same id means same bytes, hence same size.)
      const fresh = new Map<string, PlacedChunk>()
      for (const c of data) fresh.set(fileKey(rootId, path, c.offset, c.id).toString('latin1'), c)
      const batch = this.db.batch()
      for (const k of old) {
        if (!fresh.delete(k.toString('latin1'))) batch.del(k).del(fileToLoc(k))
      }
      if (batch.length > 0) this.nearby.invalidate()
      for (const c of fresh.values()) {
        const size = sizeValue(c.size)
        batch.put(locKey(c.id, rootId, path, c.offset), size).put(fileKey(rootId, path, c.offset, c.id), size)
      }
      // the stamp goes with the locations it vouches for; changed locations without one forget the old one
      if (stamp !== undefined) batch.put(stampKey(rootId, path), Buffer.from(stamp))
      else if (batch.length > 0) batch.del(stampKey(rootId, path))
      if (batch.length > 0) this.stamps.invalidate()
      if (batch.length > 0) await batch.write()
      else await batch.close()
    })
  }

  async hasFiles (rootId: number, files: Array<{ relPath: string, chunks: PlacedChunk[] }>): Promise<boolean[]> {
    const keys: Buffer[] = []
    for (const f of files) {
      const path = this.checkFile(rootId, f.relPath)
      for (const c of f.chunks) if (!isHoleChunk(c.id)) keys.push(fileKey(rootId, path, c.offset, c.id))
    }
    // A dropped location loses its FILE and LOC keys together (readChunk), so the FILE keys tell.
    const found = keys.length === 0 ? [] : await this.db.getMany(keys)
    let k = 0
    return files.map(f => {
      let all = true
      for (const c of f.chunks) if (!isHoleChunk(c.id) && found[k++] === undefined) all = false
      return all
    })
  }

  async indexNewFiles (rootId: number, files: Array<{ relPath: string, chunks: PlacedChunk[], stamp?: Uint8Array }>): Promise<void> {
    // Check everything before the batch exists, so a bad entry leaves no half-built batch open.
    const checked = files.map(f => {
      if (f.chunks.length > MAX_CHUNKS_PER_FILE) throw new LimitExceededError('chunks per file', f.chunks.length, MAX_CHUNKS_PER_FILE)
      for (const c of f.chunks) checkPlacement(f.relPath, c.id, c.offset, c.size)
      return { path: this.checkFile(rootId, f.relPath), f }
    })
    const puts: Array<[Buffer, Buffer]> = []
    for (const { path, f } of checked) {
      for (const c of f.chunks) {
        if (isHoleChunk(c.id)) continue
        const size = sizeValue(c.size)
        puts.push([locKey(c.id, rootId, path, c.offset), size], [fileKey(rootId, path, c.offset, c.id), size])
      }
      if (f.stamp !== undefined) puts.push([stampKey(rootId, path), Buffer.from(f.stamp)])
    }
    await this.putLocations(puts)
  }

  async addLocations (id: ChunkId, locations: ChunkLocation[]): Promise<void> {
    // Check everything before the batch exists, so a bad location leaves no half-built batch open.
    const paths = locations.map(loc => {
      checkPlacement(loc.relPath, id, loc.offset, loc.size)
      return this.checkFile(loc.rootId, loc.relPath)
    })
    if (isHoleChunk(id)) return
    const puts: Array<[Buffer, Buffer]> = []
    locations.forEach((loc, n) => {
      const path = paths[n] as Buffer
      const size = sizeValue(loc.size)
      puts.push([locKey(id, loc.rootId, path, loc.offset), size], [fileKey(loc.rootId, path, loc.offset, id), size])
    })
    // a new location in a file: its stamp vouched for the others only
    await this.putLocations(puts, locations.map((loc, n) => stampKey(loc.rootId, paths[n] as Buffer)))
  }

  async recordStamps (rootId: number, files: Array<{ relPath: string, stamp: Uint8Array }>): Promise<void> {
    const stamps = files.map(f => [stampKey(rootId, this.checkFile(rootId, f.relPath)), Buffer.from(f.stamp)] as [Buffer, Buffer])
    await this.stamps.record(stamps)
  }

  /**
   * Group commit of location puts: the first caller writes at once; callers arriving while a write runs
   * (a sync stores up to 32 chunks at a time) share the next one. Each resolves once its keys are written,
   * so "recorded" still means written, at one database write per group instead of one per chunk.
   */
  private async putLocations (puts: Array<[Buffer, Buffer]>, dels: Buffer[] = []): Promise<void> {
    if (puts.length === 0) return
    if (dels.length > 0) this.stamps.invalidate()
    await new Promise<void>((resolve, reject) => {
      for (const p of puts) this.locationQueue.puts.push(p)
      for (const d of dels) this.locationQueue.dels.push(d)
      this.locationQueue.waiters.push({ resolve, reject })
      if (!this.writingLocations) this.flushLocations()
    })
  }

  private flushLocations (): void {
    const group = this.locationQueue
    this.locationQueue = { puts: [], dels: [], waiters: [] }
    this.writingLocations = true
    const batch = this.db.batch()
    for (const k of group.dels) batch.del(k)
    for (const [k, v] of group.puts) batch.put(k, v)
    batch.write().then(() => { for (const w of group.waiters) w.resolve() }, (err: unknown) => { for (const w of group.waiters) w.reject(err) }).finally(() => {
      this.writingLocations = false
      if (this.locationQueue.waiters.length > 0) this.flushLocations()
    }).catch(() => {})
  }

  async removeFile (rootId: number, relPath: string): Promise<void> {
    const path = pathToBytes(validateRelativePath(relPath))
    await this.fileLocks.run(`${rootId}/${relPath}`, async () => {
      const old = await this.db.keys(range(filePrefix(rootId, path))).all()
      this.nearby.invalidate()
      this.stamps.invalidate()
      const batch = this.db.batch().del(stampKey(rootId, path))
      for (const k of old) batch.del(k).del(fileToLoc(k))
      await batch.write()
    })
  }

  async locations (id: ChunkId): Promise<ChunkLocation[]> {
    if (!isChunkId(id) || isHoleChunk(id)) return []
    const out: ChunkLocation[] = []
    for await (const [k, v] of this.db.iterator(range(locPrefix(id)))) out.push(decodeLocKey(k, decodeSize(v)).location)
    return out
  }

  async has (id: ChunkId): Promise<boolean> {
    if (!isChunkId(id) || isHoleChunk(id)) return false
    // Keys only, one entry: existence is all we need, never the values.
    const found = await this.db.keys({ ...range(locPrefix(id)), limit: 1 }).all()
    return found.length > 0
  }

  /**
   * has() for many ids (the planner's diff of a whole manifest): one iterator seeks from id to id in key
   * order, one native call per id instead of an iterator per id (about 3× has(); see the store report).
   */
  async hasMany (ids: ChunkId[]): Promise<boolean[]> {
    const out = new Array<boolean>(ids.length).fill(false)
    const sorted = ids.map((_, i) => i).filter(i => isChunkId(ids[i]) && !isHoleChunk(ids[i] as ChunkId)).sort((a, b) => Buffer.compare(ids[a] as ChunkId, ids[b] as ChunkId))
    await this.seekEach(ids, sorted, out)
    return out
  }

  private async seekEach (ids: ChunkId[], sorted: number[], out: boolean[]): Promise<void> {
    const first = sorted[0]
    const last = sorted[sorted.length - 1]
    if (first === undefined || last === undefined) return
    const it = this.db.keys({ gte: locPrefix(ids[first] as ChunkId), lt: range(locPrefix(ids[last] as ChunkId)).lt })
    try {
      for (const i of sorted) {
        const prefix = locPrefix(ids[i] as ChunkId)
        it.seek(prefix)
        const k = await it.next()
        out[i] = k !== undefined && k.subarray(0, prefix.length).equals(prefix)
      }
    } finally {
      await it.close()
    }
  }

  async readChunk (id: ChunkId, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    signal?.throwIfAborted()
    if (!isChunkId(id) || isHoleChunk(id)) return undefined
    const p = this.read(id, signal)
    this.inFlight.add(p)
    try { return await p } finally { this.inFlight.delete(p) }
  }

  /** Waits for reads under way, then stops the reader's worker. The database is closed by its opener. */
  async close (): Promise<void> {
    await Promise.allSettled([...this.inFlight])
    await this.reader.close()
  }

  /**
   * The first location entry of a chunk. Lookups made in the same tick (a server reading ahead for several
   * wants, many streams at once) share one iterator that seeks from id to id in key order: an iterator per
   * lookup cost more than the file read and the re-hash together when serving (profiled: ~0.5 ms each).
   */
  private async firstLocation (id: ChunkId): Promise<[Buffer, Buffer] | undefined> {
    return await new Promise((resolve, reject) => {
      this.pendingLookups.push({ id, resolve, reject })
      if (this.pendingLookups.length === 1) setImmediate(() => { this.lookupPending().catch(() => {}) })
    })
  }

  private async lookupPending (): Promise<void> {
    const batch = this.pendingLookups.sort((a, b) => Buffer.compare(a.id, b.id))
    this.pendingLookups = []
    const epoch = this.nearby.epoch
    const found: Array<[Buffer, Buffer]> = []
    let it
    try {
      it = this.db.iterator({ gte: locPrefix((batch[0] as typeof batch[number]).id), lt: range(locPrefix((batch[batch.length - 1] as typeof batch[number]).id)).lt })
      for (const lookup of batch) {
        const prefix = locPrefix(lookup.id)
        it.seek(prefix)
        const entry = await it.next()
        const hit = entry !== undefined && entry[0].subarray(0, prefix.length).equals(prefix) ? entry : undefined
        if (hit !== undefined) found.push(hit)
        lookup.resolve(hit)
      }
    } catch (err) {
      for (const lookup of batch) lookup.reject(err)
    } finally {
      await it?.close()
    }
    // After the lookups are answered. A read-ahead that fails loses only the hint: the reads it would have
    // served look their chunks up in the database, and a database fault surfaces there, to their callers.
    if (found.length > 0) {
      const ahead = this.nearby.remember(found, epoch).catch(() => undefined)
      this.readingAhead = ahead
      await ahead
      if (this.readingAhead === ahead) this.readingAhead = undefined
    }
  }

  private async read (id: ChunkId, signal: AbortSignal | undefined): Promise<Buffer | undefined> {
    // Most chunks lie in one place, and that place is good: try the first location alone (a cached one is a
    // location read ahead with its file's earlier chunks; the database decides if reading there fails).
    let cached = this.nearby.get(id)
    // the server reads ahead several chunks of a file at once: all but the first are in the read-ahead under way
    if (cached === undefined && this.readingAhead !== undefined) { await this.readingAhead; cached = this.nearby.get(id) }
    const first = cached ?? await this.firstLocation(id)
    if (first === undefined) return undefined
    signal?.throwIfAborted()
    const attempt = await this.readAt(id, first[0], decodeLocKey(first[0], decodeSize(first[1])).location, signal)
    if (attempt.kind === 'ok') return attempt.bytes
    if (cached !== undefined) this.nearby.forget(id)
    return await this.readAny(id, signal)
  }

  private async readAny (id: ChunkId, signal: AbortSignal | undefined): Promise<Buffer | undefined> {
    // Page through the locations instead of loading them all: a common chunk (zeros) can lie in thousands of places.
    const it = this.db.iterator(range(locPrefix(id)))
    try {
      for (;;) {
        const page = await it.nextv(8)
        if (page.length === 0) return undefined
        for (const [k, v] of page) {
          signal?.throwIfAborted()
          const { location } = decodeLocKey(k, decodeSize(v))
          const attempt = await this.readAt(id, k, location, signal)
          if (attempt.kind === 'ok') return attempt.bytes
          if (attempt.kind === 'error') { this.events.onReadError?.(id, location, attempt.error); continue }
          this.nearby.invalidate()
          this.stamps.invalidate()
          await this.db.batch().del(k).del(locToFile(k)).del(stampKeyOfLoc(k)).write()
          this.events.onCorrupt?.(id, location, attempt.reason)
        }
      }
    } finally {
      await it.close()
    }
  }

  private async readAt (id: ChunkId, locKey: Buffer, loc: ChunkLocation, signal: AbortSignal | undefined): Promise<Attempt> {
    const root = this.roots.get(loc.rootId)
    if (root === undefined) return { kind: 'corrupt', reason: `root ${loc.rootId} no longer exists` }
    if (loc.size > MAX_CHUNK_SIZE) return { kind: 'corrupt', reason: `size ${loc.size} over MAX_CHUNK_SIZE` }
    const abs = safeJoin(root.path, loc.relPath)
    if (abs === undefined) return { kind: 'corrupt', reason: 'path escapes its root' }
    signal?.throwIfAborted()
    let outcome
    const sk = stampKeyOfLoc(locKey)
    try {
      const stamp = await this.stamps.get(sk)
      // a copy: a Buffer from the database may be a view of a larger one, all of which would be cloned
      outcome = await this.reader.run({ type: 'read', path: abs, offset: loc.offset, size: loc.size, id, ...(stamp === null ? {} : { stamp: new Uint8Array(stamp) }) })
    } catch (err) {
      return classify(err)
    }
    switch (outcome.kind) {
      case 'ok':
        if (outcome.hashed) this.readStats.hashed++
        else this.readStats.trusted++
        // the chunk is the whole file: the stamp vouches for this chunk alone (others may be recorded in the
        // file, and a re-hash of one proves nothing about them)
        if (outcome.stamp !== undefined && loc.offset === 0 && loc.size === stampSize(outcome.stamp)) await this.stamps.record([[sk, bindStamp(outcome.stamp, id)]]).catch(() => {})
        return { kind: 'ok', bytes: Buffer.from(outcome.bytes.buffer, outcome.bytes.byteOffset, outcome.bytes.byteLength) }
      case 'short': return { kind: 'corrupt', reason: `short read: ${outcome.bytesRead} of ${loc.size} bytes` }
      case 'mismatch': this.readStats.hashed++; return { kind: 'corrupt', reason: 'hash mismatch' }
    }
  }

  private checkFile (rootId: number, relPath: string): Buffer {
    if (!this.roots.has(rootId)) throw new UnknownRootError(rootId)
    return pathToBytes(validateRelativePath(relPath))
  }
}

function checkPlacement (relPath: string, id: unknown, offset: number, size: number): void {
  if (!isChunkId(id)) throw new InvalidLocationError(relPath, 'chunk id is not a 32-byte Uint8Array')
  if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidLocationError(relPath, `offset ${offset}`)
  if (!Number.isSafeInteger(size) || size < 0) throw new InvalidLocationError(relPath, `size ${size}`)
  if (size > MAX_CHUNK_SIZE) throw new LimitExceededError('chunk size', size, MAX_CHUNK_SIZE)
}

function classify (err: unknown): Attempt {
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && GONE_CODES.has(code)) return { kind: 'corrupt', reason: `file gone (${code})` }
  return { kind: 'error', error: err instanceof Error ? err : new Error(String(err)) }
}

/** root + relPath, or undefined if the result would leave the root (relPath is validated on write, but keys come from disk). */
function safeJoin (rootPath: string, relPath: string): string | undefined {
  const abs = join(rootPath, relPath)
  const rel = relative(rootPath, abs)
  if (rel === '' || rel.startsWith('..' + sep) || rel === '..' || isAbsolute(rel)) return undefined
  return abs
}
