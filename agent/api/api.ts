// The agent's local control API: what the CLI (and later the dashboard) may ask a running agent.
// The control server exposes exactly this over a unix socket in the agent's home; the client implements
// the same interface, so commands do not care whether they talk to a socket or to an in-process agent.

import type { LimitRequest, LinkStatus } from '../bandwidth/manager.js'

import type { SyncPhase, SyncProgress } from '../sync/progress.js'

export type { LimitRequest, LinkStatus }

export type { SyncPhase, SyncProgress }

export interface VersionSummary {
  seq: number
  label: string
  state: 'announced' | 'syncing' | 'complete' | 'failed'
  createdAtMs: number
  publisherKey: string
  root: string
  files?: number
  bytes?: number
  newBytes?: number
  /** At the publisher: entries of the source left out of this version (special or unreadable files), with the first few. */
  skipped?: { count: number, sample: Array<{ path: string, kind: string, reason: string }> }
}

export interface TreeStatus {
  name: string
  currentSeq?: number
  /** Newest version announced by a trusted publisher (seq), whether or not we hold it. */
  newestSeq?: number
  subscribedTo?: string
  include?: string[]
  exclude?: string[]
  /** subscribe --allow-empty / --max-drop (absent: refuse an empty selection / 50). */
  allowEmpty?: boolean
  maxDropPercent?: number
  trustedKeys: string[]
  versions: VersionSummary[]
  sync?: SyncProgress
  /** The newest version (or the current one rebuilt for a changed filter) refused for what the filter selects; the served version stays. */
  refused?: SelectionRefusal
  /** [[serve]]: where this site publishes the tree over HTTP(S). Gossiped only when `listed` (a filtered subscription lacks files). */
  serves?: TreeServe[]
}

export interface TreeServe { url: string, location?: string, preference: number, listed: boolean }

/** Why a version was not installed: its selection would empty the mirror or drop too many of its files. */
export interface SelectionRefusal {
  seq: number
  reason: 'empty' | 'drop'
  /** Regular files the filter selects, of the version's; the served version's files. */
  selected: number
  total: number
  previousSeq?: number
  previousFiles?: number
  maxDropPercent: number
  message: string
}

export interface PeerStatus {
  peerId: string
  name?: string
  addr?: string
  connected: boolean
  /** Bytes of deltamesh frames (chunks, requests, heads) sent to / received from the peer. */
  bytesUp: number
  bytesDown: number
  /** Chunk payload alone. */
  chunkBytesUp: number
  chunkBytesDown: number
  chunksUp: number
  chunksDown: number
  badChunks: number
  strikes: number
  bannedUntilMs?: number
}

export interface AgentStatus {
  peerId: string
  multiaddrs: string[]
  publisherKey: string
  version: string
  startedAtMs: number
  trees: TreeStatus[]
  peers: PeerStatus[]
  /** Bandwidth: the global limits first, then named links, then peers' own links. */
  links: LinkStatus[]
  /** Tree weights on busy links (trees not listed have weight 1). */
  treeWeights: Record<string, number>
  /** The web dashboard (and /metrics) of this agent; absent when [dashboard] enabled = false. */
  dashboard?: { url: string }
  /** The public metalink and mirrorlist listener; absent unless [mirrors] listen is set. */
  mirrors?: { url: string }
  /** [[publish]] sources watched and published on change. */
  watches?: WatchStatus[]
  /** counters.envelopesRejected by reason (REJECT_REASONS in sync/admission.ts). */
  envelopeRejections?: Record<string, number>
  counters: {
    envelopesRejected: number
    chunksRejected: number
    bytesUp: number
    bytesDown: number
    chunkBytesUp: number
    chunkBytesDown: number
  }
}

/** A source published when it changes ([[publish]] watch = true, or `publish --watch`). */
export interface WatchStatus {
  tree: string
  src: string
  /** idle: nothing to publish; pending: a change waits for the quiet period (or maxDelay); publishing: under way; off: watch = false. */
  phase: 'idle' | 'pending' | 'publishing' | 'off'
  quietMs: number
  maxDelayMs: number
  /** Directories watched (one inotify watch each). */
  dirs: number
  pendingSinceMs?: number
  dueAtMs?: number
  changes: number
  publishes: number
  last?: { atMs: number, seq?: number, unchanged?: boolean, error?: string }
  /** The watcher could not watch everything (inotify limit, permissions): changes may be seen late. */
  watchError?: string
}

export interface PublishRequest { tree: string, source: string, label?: string, strict?: boolean, force?: boolean }
export interface PublishSummary {
  tree: string
  seq: number
  label: string
  root: string
  files: number
  bytes: number
  chunks: number
  newChunks: number
  newBytes: number
  cachedFiles: number
  /** Files whose ctime alone changed, read and found to hold their cached chunks (absent from an agent before this field). */
  verifiedFiles?: number
  manifestBytes: number
  durationMs: number
  /** Other names of files in the version (hardlinks at the source). */
  hardlinks?: number
  /** Entries of the source left out of the version (special or unreadable files), with the first few. */
  skipped?: { count: number, sample: Array<{ path: string, kind: string, reason: string }> }
  /** The tree is identical to the newest version (same root): nothing was published; seq and root are that version's. */
  unchanged?: boolean
}

export interface SubscribeRequest {
  tree: string
  to: string
  include?: string[]
  exclude?: string[]
  /** An existing copy of the tree (e.g. an rsync mirror): the first version takes the files that verify from it. */
  seed?: string
  /** Copy seed files instead of hardlinking them (the seed stays independent of the versions). */
  seedCopy?: boolean
  /** Install a version even when the filter selects none of its files (default: refused, the previous one stays). */
  allowEmpty?: boolean
  /** Refuse a version that selects more than this share (%, 0–100) fewer files than the served one; default 50, 100: never. */
  maxDropPercent?: number
}

export interface SyncResult {
  tree: string
  seq: number
  /** Bytes this version needed from the network, and took. */
  bytesFetched: number
  durationMs: number
}

export interface VerifySummary {
  tree: string
  seq: number
  path: string
  files: number
  bytes: number
  problems: Array<{ path: string, reason: string }>
}

export interface WaitForSyncOptions {
  signal?: AbortSignal
  onProgress?: (p: SyncProgress) => void
  /** Also wait until a version with at least this seq is held (e.g. the seq `publish` just printed: its announcement may still be on its way). */
  minSeq?: number
}

export interface AgentApi {
  status (): Promise<AgentStatus>
  publish (request: PublishRequest, signal?: AbortSignal): Promise<PublishSummary>
  subscribe (request: SubscribeRequest): Promise<void>
  unsubscribe (tree: string): Promise<void>
  addPeer (addr: string, name?: string): Promise<void>
  trust (tree: string, publisherKey: string): Promise<void>
  verify (tree: string, seq?: number, signal?: AbortSignal): Promise<VerifySummary>
  /** Changes bandwidth limits at once and persists them (HOME/limits.json); returns the link as it is now. */
  setLimit (request: LimitRequest): Promise<LinkStatus>
  /** Sets a tree's weight (undefined: back to config); returns the weight in force. */
  setTreeWeight (tree: string, weight?: number): Promise<number>
  /**
   * Resolves once the agent holds the newest announced version of `tree` completely (immediately if it
   * already does); calls onProgress while it syncs; rejects with the sync's error if it fails, or on abort.
   */
  waitForSync (tree: string, options: WaitForSyncOptions): Promise<SyncResult>
  /** Asks the agent to stop (the same as SIGTERM). */
  shutdown (): Promise<void>
}
