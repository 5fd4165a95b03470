// What building a version takes and reports: shared by the materializer (prepare, fill) and install (finalize).
import type { ChunkId } from '../../protocol/chunk-id.js'
import type { ChunkingParams, ManifestEntry } from '../../protocol/manifest.js'
import type { ChunkRef } from '../../protocol/manifest.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import type { SyncFs } from '../fs/durability.js'
import type { FsBatch } from '../fs/fs-batch.js'
import type { Catalog, ChunkIndex, GateRecord, PlacedChunk } from '../store/types.js'
import type { PathFilter } from './filter.js'

export interface MaterializerComponents {
  index: ChunkIndex
  catalog: Catalog
  home: HomeLayout
  log?: Logger
  /** Flushes the staging filesystem at finalize (tests inject a failing one); default syncfs via `sync -f`. */
  syncFs?: SyncFs
  /** Runs the per-file filesystem steps; default the process's shared one. */
  fsBatch?: FsBatch
  /** Hashes a file against a chunk list (the chunker pool's workers); needed to take files from a seed. */
  verifyFile?: (path: string, chunks: readonly ChunkRef[], signal?: AbortSignal) => Promise<boolean>
  /** Chunks a file as the publisher did (the chunker pool); lets a seed file that differs lend its unchanged chunks. */
  chunkFile?: (path: string, params: ChunkingParams, signal?: AbortSignal) => Promise<PlacedChunk[]>
}

/**
 * An operator's existing copy of the tree (an rsync mirror, a shipped disk): for a first version, a file found
 * there at the same path whose bytes hash to the manifest's chunks is taken instead of fetched — hardlinked
 * (shared with the seed, so the seed must not be edited in place afterwards) or, with `copy`, copied.
 */
export interface Seed {
  dir: string
  copy: boolean
  /** The version's chunking (its manifest header): a seed file that differs is cut the same way. */
  chunking: ChunkingParams
}

/** The previous complete version of the tree: unchanged files are hardlinked from it. */
export interface PreviousVersion {
  dir: string
  entries: () => AsyncIterable<ManifestEntry>
}

export interface MaterializeInit {
  tree: string
  seq: number
  /** The version's manifest in canonical order; called once per pass (prepare, finalize), so it must be re-iterable. */
  entries: () => AsyncIterable<ManifestEntry>
  filter?: PathFilter
  previous?: PreviousVersion
  /** Only used for files the previous version (if any) cannot lend. */
  seed?: Seed
  /** The signed envelope, used when the catalog has no VersionRecord for (tree, seq) yet. */
  envelope?: Uint8Array
  signal?: AbortSignal
  onProgress?: (progress: MaterializeProgress) => void
  /** Called when prepare() is done with a file (tests inject crashes here); files are prepared several at once. */
  afterFile?: (relPath: string) => void | Promise<void>
  /** 0 (default): built as versions/<seq>; n > 0: the version rebuilt for a changed filter, as versions/<seq>.<n>. */
  generation?: number
  /** The subscription filter `filter` was made from: recorded with the complete version (a changed one is re-applied). */
  selection?: { include?: string[], exclude?: string[] }
  /** The top directory's times from the manifest header (format 2), set on the version directory at install. */
  rootTimes?: { mtimeMs: number, mtimeNs?: number }
  /**
   * A subscription's gate: called with the version's directory once it is complete (renamed into place, its
   * chunks served), before any link flips to it; 'refused' leaves the links and TreeRecord.currentSeq alone.
   */
  gate?: (versionDir: string) => Promise<GateRecord>
}

/** One place a planned chunk must be written in staging. */
export interface Placement { relPath: string, offset: number }

export interface PlannedChunk { id: ChunkId, size: number, placements: Placement[] }

export interface MaterializeProgress {
  tree: string
  seq: number
  plannedChunks: number
  plannedBytes: number
  doneChunks: number
  doneBytes: number
}

/** What prepare() did locally; the rest is the plan. */
export interface PrepareStats {
  files: number
  bytes: number
  chunks: number
  linkedFiles: number
  /** Files taken from the seed after their bytes verified. */
  seededFiles: number
  /** Chunks written from local copies (any tree, any version, a source). */
  localChunks: number
  localBytes: number
  /** Chunks already in staging from an interrupted run, verified and kept. */
  resumedChunks: number
}
