// The agent's local control API: what the CLI (and later the dashboard) may ask a running agent.
// The control server exposes exactly this over a unix socket in the agent's home; the client implements
// the same interface, so commands do not care whether they talk to a socket or to an in-process agent.

import type { LimitRequest, LinkStatus } from '../bandwidth/manager.js'

import type { Stuck, StuckReason, SyncPhase, SyncProgress } from '../sync/progress.js'
import type { GateRecord, HookCommand } from '../store/types.js'
import type { PathChange } from '../../protocol/manifest-diff.js'
import type { AgentEvent, EventsOptions } from './events.js'

export type { LimitRequest, LinkStatus }

export type { Stuck, StuckReason, SyncPhase, SyncProgress }

export type { GateRecord, HookCommand, PathChange, AgentEvent, EventsOptions }

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
  /** What the subscription's gate decided of it (absent: no gate ran). */
  gate?: GateRecord
  /** At the publisher: chunks of this version changed in its source since it was published: it cannot serve them (issue 24.4). */
  unservable?: { chunks: number, paths: string[], sinceMs: number, message: string }
}

/** The subscription's commands since the agent started (counters are not kept across restarts). */
export interface HookStats {
  gateRuns: number
  gateRefusals: number
  onVersionRuns: number
  onVersionFailures: number
  /** Versions flipped to while the post-version command ran, not run for separately. */
  onVersionCoalesced: number
  /** The version the post-version command runs for now. */
  onVersionRunning?: number
  lastOnVersion?: { seq: number, ok: boolean, reason?: string, output: string[], atMs: number }
}

/** The newest version the gate refused, newer than the one served: held here, not exposed. */
export interface GateRefusal extends GateRecord {
  seq: number
  label: string
  /** The version still served. */
  currentSeq?: number
  message: string
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
  /** Why this tree waits and cannot move by itself (no trusted key, no peer holds chunks, source changed), when it does. */
  stuck?: Stuck
  /** The newest version (or the current one rebuilt for a changed filter) refused for what the filter selects; the served version stays. */
  refused?: SelectionRefusal
  /** subscribe --gate and --on-version (argv, deadline). */
  gate?: HookCommand
  onVersion?: HookCommand
  /** The newest version the gate refused, when it is newer than the served one. */
  gateRefused?: GateRefusal
  hooks?: HookStats
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

/** The [[peers]] entry `removePeer` took out. */
export interface RemovedPeer { peerId: string, addr: string, name?: string }
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
  /** Run on each new complete version before the path flips to it; exit 0 lets it flip (argv, no shell). */
  gate?: string[]
  /** The gate's deadline (default DEFAULT_GATE_TIMEOUT_MS); past it the version is refused. */
  gateTimeoutMs?: number
  /** Run after the path flipped to a new version (argv, no shell), in the background. */
  onVersion?: string[]
  onVersionTimeoutMs?: number
}

/** subscribe --gate-timeout default: 10 minutes. */
export const DEFAULT_GATE_TIMEOUT_MS = 10 * 60_000
/** subscribe --on-version-timeout default: 1 hour. */
export const DEFAULT_ON_VERSION_TIMEOUT_MS = 60 * 60_000
/** The longest deadline a command may be given (a week). */
export const MAX_HOOK_TIMEOUT_MS = 7 * 24 * 3600_000

export interface DiffRequest {
  tree: string
  /** Both absent: the version before the current one and the current one; only `from`: from it to the newest. */
  from?: number
  to?: number
}

export interface DiffSummary {
  tree: string
  from?: number
  to: number
  counts: Record<PathChange['change'], number>
}

export interface DiffOptions {
  signal?: AbortSignal
  /** The next change waits for a promise it returns (a reader that is backed up). */
  onChange: (change: PathChange) => void | Promise<void>
}

export interface AcceptResult {
  tree: string
  seq: number
  /** The version served before. */
  previousSeq?: number
  path?: string
}

export interface SyncResult {
  tree: string
  seq: number
  /** Bytes this version needed from the network, and took. */
  bytesFetched: number
  durationMs: number
  /** The version was held already when asked: nothing ran (its files were not re-read). */
  alreadyHeld?: boolean
  /** The version held is known damaged (a verify found files differing, or a read found a chunk changed): what to do. */
  damaged?: string
}

export interface VerifySummary {
  tree: string
  seq: number
  path: string
  files: number
  bytes: number
  problems: Array<{ path: string, reason: string }>
  /** verify --repair: what was found before (problems is what remains after), what was repaired and what not. */
  repair?: {
    problemsBefore: Array<{ path: string, reason: string }>
    /** alsoIn: other held versions whose name shared the damaged file (same content) and now share the repaired one. */
    repaired: Array<{ path: string, fetchedChunks: number, alsoIn: number[] }>
    unrepaired: Array<{ path: string, reason: string }>
  }
}

export interface VerifyOptions {
  /** The version (default: the current one). */
  seq?: number
  /** Rebuild what differs from the manifest from local chunks and peers, then verify again. */
  repair?: boolean
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
  /** Forgets a listed peer (by [[peers]] name, peer id or address): off config.toml, no longer allowed or dialled, hung up. */
  removePeer (peer: string): Promise<RemovedPeer>
  trust (tree: string, publisherKey: string): Promise<void>
  verify (tree: string, options?: VerifyOptions, signal?: AbortSignal): Promise<VerifySummary>
  /** Changes bandwidth limits at once and persists them (HOME/limits.json); returns the link as it is now. */
  setLimit (request: LimitRequest): Promise<LinkStatus>
  /** Sets a tree's weight (undefined: back to config); returns the weight in force. */
  setTreeWeight (tree: string, weight?: number): Promise<number>
  /**
   * Resolves once the agent holds the newest announced version of `tree` completely (immediately if it
   * already does); calls onProgress while it syncs; rejects with the sync's error if it fails, or on abort.
   */
  waitForSync (tree: string, options: WaitForSyncOptions): Promise<SyncResult>
  /** The changes between two versions held here, from their manifests (each through onChange, in path order). */
  diff (request: DiffRequest, options: DiffOptions): Promise<DiffSummary>
  /** Exposes a version the subscription's gate refused: the path flips to it and the post-version command runs. */
  accept (tree: string, seq: number): Promise<AcceptResult>
  /** Follows the agent's events until the signal aborts (resolves then). */
  events (options: EventsOptions): Promise<void>
  /** Asks the agent to stop (the same as SIGTERM). */
  shutdown (): Promise<void>
}
