import type { ChunkId } from '../../protocol/chunk-id.js'

// The storage contract between the chunk index / catalog (LevelDB) and its users (scanner, publisher,
// materializer, sync engine, chunk server). "The tree is the store": no chunk bytes are copied into the
// database; it only records where each chunk already lies on disk.

/** A directory whose files the index points into. Renaming a staging dir to a version dir is one record update. */
export interface StoreRoot {
  id: number
  /** Absolute path of the directory. */
  path: string
  /** 'source': a publisher's own directory; 'staging': a version being built; 'version': a materialized version. */
  kind: 'source' | 'staging' | 'version'
  tree?: string
  seq?: number
}

/** One place a chunk lies: bytes [offset, offset+size) of file relPath under root rootId. */
export interface ChunkLocation {
  rootId: number
  relPath: string
  offset: number
  size: number
}

/** A chunk as the chunker reports it: its id and where in the file it was cut. */
export interface PlacedChunk {
  id: ChunkId
  offset: number
  size: number
}

/**
 * Holes (HOLE_CHUNK_ID) are never recorded: the writes skip them, and has/locations/readChunk know no location
 * of one (a hole is zeros nobody stores; its range is left unwritten).
 */
export interface ChunkIndex {
  addRoot (root: Omit<StoreRoot, 'id'>): Promise<StoreRoot>
  getRoot (id: number): Promise<StoreRoot | undefined>
  listRoots (): Promise<StoreRoot[]>
  /** Re-points a root after its directory was renamed (staging → version): locations follow without rewriting. */
  updateRoot (root: StoreRoot): Promise<void>
  /** Forgets a root and every location under it. */
  removeRoot (id: number): Promise<void>
  /**
   * Records the chunks of one file, replacing whatever was recorded for (rootId, relPath) before. `stamp`:
   * the file's stamp (agent/fs/file-stamp.ts) when these chunks were cut from its bytes; without one, a
   * change of the locations forgets the file's stamp.
   */
  indexFile (rootId: number, relPath: string, chunks: PlacedChunk[], stamp?: Uint8Array): Promise<void>
  /**
   * For each file, whether every one of its chunks is still recorded at its offset (one read for them all).
   * Cheaper than indexFile when the answer is nearly always yes: a publish checks the files it verified.
   */
  hasFiles (rootId: number, files: Array<{ relPath: string, chunks: PlacedChunk[] }>): Promise<boolean[]>
  /**
   * Records the chunks of many files under a root created by the caller, for which nothing was recorded
   * yet (a fresh staging dir): one write, no read of old locations. Anything else must use indexFile.
   */
  indexNewFiles (rootId: number, files: Array<{ relPath: string, chunks: PlacedChunk[], stamp?: Uint8Array }>): Promise<void>
  /** Records single chunk placements (a sync writes chunks into staging files one by one); forgets those files' stamps. */
  addLocations (id: ChunkId, locations: ChunkLocation[]): Promise<void>
  /**
   * Records files' stamps: the caller knows the chunks recorded for each file are its bytes at that stamp
   * (verified by a publish, or written and finished by a build). Reads from a file whose stamp still
   * matches skip the re-hash.
   */
  recordStamps (rootId: number, files: Array<{ relPath: string, stamp: Uint8Array }>): Promise<void>
  removeFile (rootId: number, relPath: string): Promise<void>
  locations (id: ChunkId): Promise<ChunkLocation[]>
  has (id: ChunkId): Promise<boolean>
  /** has() for many ids at once (one sorted pass over the index: several times faster than a loop). */
  hasMany (ids: ChunkId[]): Promise<boolean[]>
  /**
   * Reads a chunk from the first location whose bytes hash to `id`. A location whose bytes do not match
   * (file edited, truncated or gone behind our back) is dropped from the index and reported through
   * `onCorrupt`; it is never returned. Undefined when no location holds the chunk.
   */
  readChunk (id: ChunkId, signal?: AbortSignal): Promise<Uint8Array | undefined>
}

export interface ChunkIndexEvents {
  /** A location was found not to hold the chunk it was indexed for, and was dropped. */
  onCorrupt?: (id: ChunkId, location: ChunkLocation, reason: string) => void
}

/** Lifecycle of a version held (or being fetched) at this site. */
export type VersionState = 'announced' | 'syncing' | 'complete' | 'failed'

export interface VersionRecord {
  tree: string
  seq: number
  /** The signed envelope exactly as received or produced. */
  envelope: Uint8Array
  state: VersionState
  /** Index root of the materialized (or staging) directory; absent for a source-only publish. */
  rootId?: number
  /** Absolute path of the version's directory (materialized version, or the publisher's source). */
  path?: string
  /**
   * The publisher's source resolved at publish time, when `path` went through a symlink (a `latest` link
   * flipped to each new compose directory): the old version's bytes stay readable there after the flip,
   * which is what small-file deltas of the next version start from.
   */
  realPath?: string
  /** Totals for status and benchmarks. */
  stats?: VersionStats
  /** Entries of the source the publisher left out of this version (special or unreadable files), with the first few. */
  skipped?: SkippedEntries
  error?: string
  /**
   * The subscription filter its directory was built with (or its staging is being built with); absent on
   * records made before filters were recorded, and at a publisher. A subscription whose filter differs has
   * the version rebuilt (`generation` + 1) and flipped to.
   */
  selection?: { include?: string[], exclude?: string[] }
  /** 0 (absent): the directory is versions/<seq>; n: versions/<seq>.<n>, the n-th rebuild for a changed filter. */
  generation?: number
  /** What the subscription's gate command decided (absent: no gate ran): a refused version is complete but not served. */
  gate?: GateRecord
  /**
   * At the publisher: chunks of this version found changed in its source since it was published (a file
   * rewritten in place). They cannot be served from here any more: the version is not fully servable.
   */
  unservable?: UnservableChunks
}

export interface UnservableChunks {
  /** Chunks found changed (each counted once: its location is dropped when found). */
  chunks: number
  /** The first few files they lie in (relative to the source). */
  paths: string[]
  sinceMs: number
}

/** One run of a subscription's gate command on a complete version, before the subscription path would flip to it. */
export interface GateRecord {
  /** passed: exposed; refused: held, not served (`deltamesh accept` exposes it: then accepted). */
  outcome: 'passed' | 'refused' | 'accepted'
  /** Why it was refused, in a few words: 'exit code 3', 'timed out after 600 s (process group killed)'… */
  reason?: string
  exitCode?: number | null
  durationMs: number
  atMs: number
  /** The last lines of the command's output. */
  output: string[]
}

/** A command a subscription runs (argv, no shell) and its deadline. */
export interface HookCommand {
  argv: string[]
  timeoutMs: number
}

export interface SkippedEntries {
  count: number
  /** The first MAX_SKIPPED_SAMPLE of them; `path` in its display form (protocol/paths.ts displayPath). */
  sample: Array<{ path: string, kind: string, reason: string }>
}

export interface VersionStats {
  files: number
  bytes: number
  chunks: number
  /** Chunk bytes that had to come from the network (or were new at publish time). */
  newBytes: number
  newChunks: number
  durationMs: number
}

export interface TreeRecord {
  name: string
  /** seq of the version PATH/current points at, if any. */
  currentSeq?: number
  /** Where a subscription exposes the newest complete version (a symlink flipped atomically). */
  subscribedTo?: string
  include?: string[]
  exclude?: string[]
  /** An existing copy of the tree the first version takes matching files from (subscribe --seed). */
  seed?: string
  /** Copy the seed's files instead of hardlinking them. */
  seedCopy?: boolean
  /** How many complete versions to keep (default 3). */
  retain?: number
  /** subscribe --allow-empty: a version the filter selects no file of is installed anyway. */
  allowEmpty?: boolean
  /** subscribe --max-drop: refuse a version that selects more than this share (%) fewer files than the served one (default 50). */
  maxDropPercent?: number
  /** subscribe --gate: run on each new complete version before the subscription path flips to it; exit 0 lets it flip. */
  gate?: HookCommand
  /** subscribe --on-version: run after the subscription path flipped to a new version (never blocks the next sync). */
  onVersion?: HookCommand
}

/**
 * One file of a scanned source directory, as of the last scan; reused while (size, mtime, ctime, ino) stay
 * the same. ctime is in the key because tools that rewrite a file and restore its mtime (cp -p, rsync -t,
 * tar) leave size and mtime alike, but no user-space tool can set ctime back.
 */
export interface ScanCacheEntry {
  size: number
  mtimeMs: number
  ctimeMs: number
  ino: number
  /** May hold holes (HOLE_CHUNK_ID). */
  chunks: PlacedChunk[]
  /**
   * Cut as a sparse file (all-zero chunks recorded as holes). A list cut dense is not reused for a file that
   * is sparse now (one cached before holes existed, or a file sparsified with its times put back).
   */
  sparse?: boolean
}

/** Content-addressed blobs: root blobs and manifest chunks. getBlob re-hashes and never returns a mismatch. */
export interface BlobStore {
  putBlob (id: ChunkId, bytes: Uint8Array): Promise<void>
  getBlob (id: ChunkId): Promise<Uint8Array | undefined>
  hasBlob (id: ChunkId): Promise<boolean>
  deleteBlob (id: ChunkId): Promise<void>
}

/**
 * Deltas by key (deltaKeyOf(base chunks, target chunks)). Not content-addressed by their own bytes: a
 * reader checks a delta by applying it and hashing the result against the target's chunk ids.
 */
export interface DeltaStore {
  putDelta (key: Uint8Array, bytes: Uint8Array): Promise<void>
  getDelta (key: Uint8Array): Promise<Uint8Array | undefined>
  /** Several deltas in one read, in the order of `keys` (undefined: none). */
  getDeltas (keys: Uint8Array[]): Promise<Array<Uint8Array | undefined>>
  /** Forgets a delta (retention: the version it starts from is pruned). Absent keys are fine. */
  deleteDelta (key: Uint8Array): Promise<void>
}

/**
 * Block signatures of a chunk this site published (protocol/signature-delta.ts), kept while the chunk may be
 * the base of the next version's deltas: they let a delta be computed after the source overwrote its bytes.
 */
export interface SignatureStore {
  putSignature (id: ChunkId, signature: Uint8Array): Promise<void>
  getSignature (id: ChunkId): Promise<Uint8Array | undefined>
  /** Several in one read, in the order of `ids` (undefined: none). */
  getSignatures (ids: ChunkId[]): Promise<Array<Uint8Array | undefined>>
  /** Several in one write. */
  putSignatures (entries: Array<[ChunkId, Uint8Array]>): Promise<void>
  deleteSignature (id: ChunkId): Promise<void>
  /** Several in one write; absent ids are fine. */
  deleteSignatures (ids: ChunkId[]): Promise<void>
}

/** Trees this site publishes or follows. */
export interface TreeStore {
  putTree (tree: TreeRecord): Promise<void>
  getTree (name: string): Promise<TreeRecord | undefined>
  listTrees (): Promise<TreeRecord[]>
}

/** Versions of each tree held, being synced or announced. */
export interface VersionStore {
  putVersion (version: VersionRecord): Promise<void>
  getVersion (tree: string, seq: number): Promise<VersionRecord | undefined>
  /** Ascending by seq. */
  listVersions (tree: string): Promise<VersionRecord[]>
  deleteVersion (tree: string, seq: number): Promise<void>
}

/** The publisher's scan cache: a source file's chunk list while its size, times and inode hold. */
export interface ScanCacheStore {
  getScanEntry (sourcePath: string, relPath: string): Promise<ScanCacheEntry | undefined>
  /** getScanEntry for many paths in one read (a rescan of small files is mostly these lookups). */
  getScanEntries (sourcePath: string, relPaths: string[]): Promise<Array<ScanCacheEntry | undefined>>
  putScanEntries (sourcePath: string, entries: Array<[relPath: string, entry: ScanCacheEntry]>): Promise<void>
  /** Drops cache entries of files no longer present (called after a full scan with the paths seen). */
  pruneScanCache (sourcePath: string, keep: (relPath: string) => boolean): Promise<void>
}

/** Small JSON-able state of other components (sync progress, peer scores, limits). */
export interface StateStore {
  getState<T> (key: string): Promise<T | undefined>
  putState (key: string, value: unknown): Promise<void>
  deleteState (key: string): Promise<void>
}

/**
 * Everything the agent keeps besides the chunk index, by concern; a component that needs one concern takes
 * that interface (a manifest reader a BlobStore, retention a VersionStore & DeltaStore…), not the whole.
 */
export interface Catalog extends BlobStore, DeltaStore, SignatureStore, TreeStore, VersionStore, ScanCacheStore, StateStore {}
