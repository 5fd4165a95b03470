// What the parts of the tree manager share (trees.ts: admission and heads; subscriptions.ts; sync-runner.ts):
// its components, the state kept per tree, and the small rules they all apply to that state.
import type { ChunkId } from '../../protocol/chunk-id.js'
import type { Envelope } from '../../protocol/envelope.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import type { Catalog, ChunkIndex, TreeRecord, VersionRecord } from '../store/types.js'
import type { RejectReason } from '../net/admission.js'
import type { VersionSync, VersionSyncComponents } from '../sync/version-sync.js'
import type { FetchFn } from '../sync/chunk-pump.js'
import { sameFilter, type FilterSpec } from '../versions/filter.js'
import type { SelectionRefusedError } from '../versions/errors.js'
import type { SyncProgress, SyncResult } from '../api/api.js'
import type { EventHub } from './events.js'
import type { VersionHooks } from './version-hooks.js'
import type { RefusedOffer } from './why-waiting.js'
import type { StallWatch } from './stall-watch.js'

export interface TreeManagerComponents {
  selfId: string
  selfPublisherKey: string
  home: HomeLayout
  index: ChunkIndex
  catalog: Catalog
  log: Logger
  /** Asks one peer for chunks on behalf of a tree (the tree is the unit of fair sharing and priority). */
  fetchFor: (tree: string) => FetchFn
  /** Small-file deltas by key from one peer (hex key → untrusted delta); absent: plain chunks only. */
  fetchDeltas?: (peerId: string, keys: Uint8Array[], signal: AbortSignal) => Promise<Map<string, Uint8Array>>
  /** Trusted publisher keys per tree ('ed25519:…'), from the config plus `trust` at runtime. */
  trustedKeys: (tree: string) => ReadonlySet<string>
  announceHave: (tree: string, seq: number, ids: ChunkId[]) => void
  /** Start (a sync starts) or stop (the version is held, or the tree unsubscribed) taking peers' HAVEs for the tree. */
  listenHaves?: (tree: string, on: boolean) => void
  /** Our heads changed (a version completed): tell every peer. */
  headsChanged: () => void
  /** A tree became interesting (subscribed, published): listen to its gossip topics. */
  watchTree: (tree: string) => void
  onBadChunk: (peerId: string, reason: string) => void
  /** A delta that did not rebuild its target's chunks (the peer is struck here, not by the delta protocol). */
  onBadDelta?: (peerId: string, reason: string) => void
  onReceived: (peerId: string, bytes: number, tree: string) => void
  /** A version refused: counted per reason in status (the log line is written here). */
  onRejected: (code: RejectReason, reason: string) => void
  /** A sync ended (metrics): complete with its result, or failed; an aborted sync (superseded, stopping) is not reported. */
  onSyncEnded?: (tree: string, outcome: { result: SyncResult } | { error: Error }) => void
  /** Hashes a file against a chunk list (the chunker pool): a seed's files are taken only after it. */
  verifyFile?: VersionSyncComponents['verifyFile']
  /** Chunks a file (the chunker pool): a seed file that differs lends its unchanged chunks. */
  chunkFile?: VersionSyncComponents['chunkFile']
  /** The agent's event stream. */
  events: EventHub
  /** The subscriptions' gate and post-version commands. */
  hooks: VersionHooks
  /** Why chunks of a version may be missing everywhere, if some site says so (see VersionSyncComponents). */
  explainMissing?: VersionSyncComponents['explainMissing']
  /** Whether a syncing site can fetch from anyone but us (see VersionSyncComponents). */
  canOwn?: VersionSyncComponents['canOwn']
  /** A peer's name from [[peers]], for messages. */
  peerName?: (peerId: string) => string | undefined
}

export interface TreeManagerInit {
  windowBytes: number
  ownerGraceMs?: number
  ownerStallMs?: number
  /** Retry delays after a failed sync. */
  retryBackoffMs?: number[]
}

export interface Waiter {
  minSeq: number
  onProgress?: (p: SyncProgress) => void
  resolve: (r: SyncResult) => void
  reject: (err: Error) => void
}

export interface RunningSync {
  seq: number
  /** > 0: the version held now, rebuilt for a changed filter. */
  generation: number
  /** The filter it builds with: a subscription that changes it aborts the build. */
  selection: FilterSpec
  sync: VersionSync
  controller: AbortController
  beacon: ReturnType<typeof setInterval> | undefined
  done: Promise<void>
}

export interface TreeState {
  name: string
  newest?: Envelope
  newestComplete: boolean
  /** What each connected peer told us it holds of this tree. */
  holders: Map<string, { seq: number, complete: boolean }>
  /** HAVEs heard for the newest seq: peer → hex ids (and "is syncing" from the beacon). */
  haves: Map<string, ChunkId[]>
  running?: RunningSync
  failures: number
  /** Running syncs abandoned for a newer version since one last completed (see SyncRunner.ensureSync). */
  overtaken: number
  /** Set while a running sync is let finish although a newer version is known: checks that it still moves. */
  stall?: StallWatch<RunningSync>
  /** A signed version whose manifest is malformed: retrying cannot help, so it is skipped until a newer one. */
  badManifestSeq?: number
  retryTimer?: ReturnType<typeof setTimeout>
  lastError?: string
  lastSync?: SyncProgress
  /** A version refused for its selection: not retried until the subscription or the newest version changes. */
  refused?: { seq: number, generation: number, error: SelectionRefusedError }
  /** The held version known damaged (verify found files differing, or a read a changed chunk), until a clean verify. */
  damaged?: { seq: number, message: string }
  /** A version newer than the newest admitted, refused on arrival (untrusted key…): why a subscriber waits. */
  refusedOffer?: RefusedOffer
  /** The last rebuild started in this process: its staging is reused by a retry with the same filter. */
  lastRebuild?: { seq: number, generation: number, selection: FilterSpec }
  waiters: Set<Waiter>
}

/** Every tree this agent has heard of, by name; a tree's state is created on first use. */
export class TreeStates extends Map<string, TreeState> {
  state (tree: string): TreeState {
    let s = this.get(tree)
    if (s === undefined) {
      s = { name: tree, newestComplete: false, holders: new Map(), haves: new Map(), failures: 0, overtaken: 0, waiters: new Set() }
      this.set(tree, s)
    }
    return s
  }
}

/** The publisher keys whose versions of `tree` are admitted. */
export function trustedKeys (c: Pick<TreeManagerComponents, 'trustedKeys' | 'selfPublisherKey'>, tree: string): ReadonlySet<string> {
  const keys = new Set(c.trustedKeys(tree))
  keys.add(c.selfPublisherKey) // a site always trusts itself for what it publishes
  return keys
}

/** The subscription's patterns as a version records them (lists, possibly empty). */
export function selectionOf (record: TreeRecord): Required<FilterSpec> {
  return { include: record.include ?? [], exclude: record.exclude ?? [] }
}

/** Whether a version's directory holds what the subscription selects (a record from before filters were recorded: assumed). */
export function shapedFor (version: VersionRecord | undefined, record: TreeRecord): boolean {
  return version?.selection === undefined || sameFilter(version.selection, record)
}

/** Whether a peer told us (heads) it holds version `seq` completely; holding an older one does not count. */
export function holdsComplete (state: TreeState, peerId: string, seq: number): boolean {
  const head = state.holders.get(peerId)
  return head !== undefined && head.complete && head.seq === seq
}
