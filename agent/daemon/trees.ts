import { setMaxListeners } from 'node:events'
import { lstat, mkdir, rename, symlink } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { describeEnvelope, formatPublisherKey, openEnvelope, type Envelope } from '../../protocol/envelope.js'
import { decodeRoot, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { validateTreeName } from '../../protocol/paths.js'
import type { HeadEntry } from '../../protocol/messages.js'
import type { HaveMessage } from '../../protocol/have.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import type { Catalog, ChunkIndex, TreeRecord, VersionRecord } from '../store/types.js'
import { admitEnvelope, type Admission, type RejectReason } from '../net/admission.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import { ManifestError } from '../versions/errors.js'
import { ManifestBlobMissingError } from '../store/errors.js'
import { VersionSync, type VersionSyncComponents } from '../sync/version-sync.js'
import type { FetchFn } from '../sync/chunk-pump.js'
import { readManifestEntries } from '../store/manifest-io.js'
import { compileFilter, sameFilter, type FilterSpec } from '../versions/filter.js'
import { DEFAULT_MAX_DROP_PERCENT, parseMaxDrop } from '../versions/selection-guard.js'
import { SelectionRefusedError } from '../versions/errors.js'
import { removeTree } from '../fs/fs-safe.js'
import { applyRetention } from '../versions/retention.js'
import type { PreviousVersion } from '../versions/materializer.js'
import type { PathFilter } from '../versions/filter.js'
import type { SelectionRefusal, SubscribeRequest, SyncProgress, SyncResult, TreeStatus, VersionSummary, WaitForSyncOptions } from '../api/api.js'

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
}

export interface TreeManagerInit {
  windowBytes: number
  ownerGraceMs?: number
  ownerStallMs?: number
  /** Retry delays after a failed sync. */
  retryBackoffMs?: number[]
}

interface Waiter {
  minSeq: number
  onProgress?: (p: SyncProgress) => void
  resolve: (r: SyncResult) => void
  reject: (err: Error) => void
}

interface RunningSync {
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

interface TreeState {
  name: string
  newest?: Envelope
  newestComplete: boolean
  /** What each connected peer told us it holds of this tree. */
  holders: Map<string, { seq: number, complete: boolean }>
  /** HAVEs heard for the newest seq: peer → hex ids (and "is syncing" from the beacon). */
  haves: Map<string, ChunkId[]>
  running?: RunningSync
  failures: number
  /** A signed version whose manifest is malformed: retrying cannot help, so it is skipped until a newer one. */
  badManifestSeq?: number
  retryTimer?: ReturnType<typeof setTimeout>
  lastError?: string
  lastSync?: SyncProgress
  /** A version refused for its selection: not retried until the subscription or the newest version changes. */
  refused?: { seq: number, generation: number, error: SelectionRefusedError }
  /** The last rebuild started in this process: its staging is reused by a retry with the same filter. */
  lastRebuild?: { seq: number, generation: number, selection: FilterSpec }
  waiters: Set<Waiter>
}

/** The subscription's patterns as a version records them (lists, possibly empty). */
function selectionOf (record: TreeRecord): Required<FilterSpec> {
  return { include: record.include ?? [], exclude: record.exclude ?? [] }
}

function refusalOf (err: SelectionRefusedError | undefined): SelectionRefusal | undefined {
  if (err === undefined) return undefined
  return { seq: err.seq, reason: err.reason, ...err.counts, maxDropPercent: err.maxDropPercent, message: err.message }
}

/** Whether a version's directory holds what the subscription selects (a record from before filters were recorded: assumed). */
function shapedFor (version: VersionRecord | undefined, record: TreeRecord): boolean {
  return version?.selection === undefined || sameFilter(version.selection, record)
}

/** A sync failure that no retry can fix: the signed root or manifest does not decode or is inconsistent. */
function isBadManifest (err: unknown): boolean {
  if (err instanceof ManifestError) return !(err.cause instanceof ManifestBlobMissingError)
  return err instanceof InvalidMessageError
}

/** Whether a peer told us (heads) it holds version `seq` completely; holding an older one does not count. */
function holdsComplete (state: TreeState, peerId: string, seq: number): boolean {
  const head = state.holders.get(peerId)
  return head !== undefined && head.complete && head.seq === seq
}

const DEFAULT_RETRY_BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
const BEACON_INTERVAL_MS = 1_000

/**
 * Per-tree state of a running agent: which signed version is the newest (admission), who holds what
 * (heads, HAVE), and the one sync per subscribed tree that brings the newest version here. A newer
 * version is synced when the running sync ends (never aborts it: see ensureSync); a failed sync is retried
 * with backoff; waiters (`deltamesh sync`) hear progress and the outcome.
 */
export class TreeManager {
  private readonly trees = new Map<string, TreeState>()
  private readonly log: Logger
  private stopped = false

  constructor (private readonly c: TreeManagerComponents, private readonly init: TreeManagerInit) {
    this.log = c.log.child({ component: 'trees' })
  }

  /** Restores state from the catalog and resumes interrupted syncs (staging and index survive a restart). */
  async load (): Promise<void> {
    for (const record of await this.c.catalog.listTrees()) {
      const state = this.state(record.name)
      for (const version of await this.c.catalog.listVersions(record.name)) {
        try {
          const envelope = openEnvelope(version.envelope)
          if (state.newest === undefined || envelope.seq > state.newest.seq) { state.newest = envelope; state.newestComplete = version.state === 'complete' }
        } catch (err) {
          this.log.error({ tree: record.name, seq: version.seq, err }, 'stored envelope no longer verifies; ignored')
        }
      }
      if (record.subscribedTo !== undefined || record.currentSeq !== undefined) this.c.watchTree(record.name)
      this.ensureSync(state)
    }
  }

  private state (tree: string): TreeState {
    let s = this.trees.get(tree)
    if (s === undefined) {
      s = { name: tree, newestComplete: false, holders: new Map(), haves: new Map(), failures: 0, waiters: new Set() }
      this.trees.set(tree, s)
    }
    return s
  }

  private trusted (tree: string): ReadonlySet<string> {
    const keys = new Set(this.c.trustedKeys(tree))
    keys.add(this.c.selfPublisherKey) // a site always trusts itself for what it publishes
    return keys
  }

  /** An envelope from gossip, a peer's heads, or our own publish. */
  async offer (envelope: Envelope, from: string | undefined, via: 'gossip' | 'heads' | 'local'): Promise<Admission> {
    const state = this.state(envelope.tree)
    const newest = state.newest
    let knownRoot: Uint8Array | undefined
    if (newest !== undefined && envelope.seq < newest.seq) {
      const known = await this.c.catalog.getVersion(envelope.tree, envelope.seq)
      if (known !== undefined) { try { knownRoot = openEnvelope(known.envelope).rootHash } catch { /* reported by load() */ } }
    }
    // re-read after the await: another offer may have moved the head meanwhile
    const admission = admitEnvelope(envelope, this.trusted(envelope.tree), state.newest === undefined ? undefined : { seq: state.newest.seq, rootHash: state.newest.rootHash }, knownRoot)
    if (admission.verdict === 'reject') {
      // a peer that is merely behind shows us its older head: that is not an attack
      const lagging = via === 'heads' && state.newest !== undefined && envelope.seq < state.newest.seq && this.trusted(envelope.tree).has(formatPublisherKey(envelope.publisherKey))
      if (!lagging) {
        this.log.warn({ tree: envelope.tree, seq: envelope.seq, peer: from, via, reason: admission.code }, `rejected version: ${admission.reason}`)
        this.c.onRejected(admission.code, admission.reason)
      }
      return admission
    }
    if (admission.verdict === 'duplicate') return admission
    // decided synchronously, so the same version arriving by gossip and by heads at once is admitted once
    state.newest = envelope
    state.newestComplete = false
    state.haves.clear()
    const existing = await this.c.catalog.getVersion(envelope.tree, envelope.seq)
    if (existing === undefined) await this.c.catalog.putVersion({ tree: envelope.tree, seq: envelope.seq, envelope: envelope.bytes, state: 'announced' })
    if (state.newest === envelope) state.newestComplete = existing?.state === 'complete'
    this.log.info({ peer: from, via }, `new version ${describeEnvelope(envelope)}${envelope.label === '' ? '' : ` (${envelope.label})`}`)
    this.ensureSync(state)
    return admission
  }

  /** Our own publish: the version is complete here by construction. */
  async published (envelope: Envelope): Promise<void> {
    this.c.watchTree(envelope.tree)
    await this.offer(envelope, undefined, 'local')
    const state = this.state(envelope.tree)
    state.newestComplete = true
    this.c.headsChanged()
  }

  async peerHeads (peerId: string, heads: Array<{ envelope: Envelope, complete: boolean }>): Promise<void> {
    for (const { envelope, complete } of heads) {
      const state = this.state(envelope.tree)
      state.holders.set(peerId, { seq: envelope.seq, complete })
      await this.offer(envelope, peerId, 'heads')
      const running = state.running
      if (running !== undefined && complete && envelope.seq === running.seq) running.sync.setPeer(peerId, true)
    }
  }

  peerGone (peerId: string): void {
    for (const state of this.trees.values()) {
      state.holders.delete(peerId)
      state.haves.delete(peerId)
      state.running?.sync.removePeer(peerId)
    }
  }

  onHave (origin: string, have: HaveMessage): void {
    if (origin === this.c.selfId) return
    const state = this.trees.get(have.tree)
    if (state?.newest === undefined || have.seq !== state.newest.seq) return
    // held here already: no sync will use them, and kept they would grow with every chunk every peer gets
    if (state.newestComplete) return
    const list = state.haves.get(origin) ?? []
    list.push(...have.ids)
    state.haves.set(origin, list)
    const running = state.running
    if (running !== undefined && running.seq === have.seq) {
      if (!holdsComplete(state, origin, have.seq)) running.sync.setPeer(origin, false)
      running.sync.peerHas(origin, have.ids)
    }
  }

  heads (): HeadEntry[] {
    const out: HeadEntry[] = []
    for (const s of this.trees.values()) {
      if (s.newest !== undefined) out.push({ tree: s.name, seq: s.newest.seq, complete: s.newestComplete, envelope: s.newest.bytes })
    }
    return out
  }

  async subscribe (request: SubscribeRequest): Promise<void> {
    const tree = validateTreeName(request.tree)
    // patterns and limits come from the control socket: checked here again, whatever the client did
    compileFilter({ include: request.include, exclude: request.exclude })
    const maxDropPercent = request.maxDropPercent === undefined ? undefined : parseMaxDrop(request.maxDropPercent)
    const to = resolve(request.to)
    const existing = await lstat(to).catch(() => undefined)
    if (existing !== undefined && !existing.isSymbolicLink()) throw new Error(`${to} exists and is not a symlink: deltamesh manages PATH as a symlink to the current version; pick a new path`)
    const seed = request.seed === undefined ? undefined : resolve(request.seed)
    if (seed !== undefined && (await lstat(seed).catch(() => undefined))?.isDirectory() !== true) throw new Error(`seed ${seed} is not a directory`)
    await mkdir(dirname(to), { recursive: true })
    const record: TreeRecord = {
      ...((await this.c.catalog.getTree(tree)) ?? { name: tree }),
      subscribedTo: to,
      include: request.include,
      exclude: request.exclude,
      seed,
      seedCopy: seed === undefined ? undefined : request.seedCopy === true,
      allowEmpty: request.allowEmpty === true ? true : undefined,
      maxDropPercent,
    }
    await this.c.catalog.putTree(record)
    if (record.currentSeq !== undefined) {
      const current = await this.c.catalog.getVersion(tree, record.currentSeq)
      await this.pointAt(to, this.c.home.versionDir(tree, record.currentSeq, current?.generation))
    }
    if (this.trusted(tree).size <= 1) this.log.warn({ tree }, 'subscribed, but no publisher key is trusted for this tree yet: run `deltamesh trust`')
    this.c.watchTree(tree)
    const state = this.state(tree)
    // a new subscription is a new decision: a refusal is reconsidered, a build with another filter restarted
    state.refused = undefined
    const running = state.running
    if (running !== undefined && !sameFilter(running.selection, record)) {
      this.log.info({ tree, seq: running.seq }, 'subscription filter changed; restarting the build with the new one')
      running.controller.abort(new Error('subscription filter changed'))
      await running.done
    }
    this.ensureSync(state)
  }

  async unsubscribe (tree: string): Promise<void> {
    const record = await this.c.catalog.getTree(tree)
    if (record === undefined) return
    await this.c.catalog.putTree({ ...record, subscribedTo: undefined, include: undefined, exclude: undefined, allowEmpty: undefined, maxDropPercent: undefined })
    const state = this.trees.get(tree)
    if (state !== undefined) state.refused = undefined
    if (state?.running !== undefined) { state.running.controller.abort(new Error('unsubscribed')); await state.running.done }
    this.c.listenHaves?.(tree, false)
  }

  /** Atomically (re)points a subscription path: a new symlink renamed over the old one. */
  private async pointAt (path: string, target: string): Promise<void> {
    const temp = `${path}.deltamesh-tmp-${process.pid}`
    await symlink(target, temp)
    await rename(temp, path)
  }

  async waitForSync (tree: string, options: WaitForSyncOptions): Promise<SyncResult> {
    const record = await this.c.catalog.getTree(tree)
    if (record?.subscribedTo === undefined) throw new Error(`not subscribed to ${tree}: run \`deltamesh subscribe --home DIR ${tree} --to PATH\` first`)
    const state = this.state(tree)
    const minSeq = options.minSeq ?? 0
    const current = record.currentSeq === undefined ? undefined : await this.c.catalog.getVersion(tree, record.currentSeq)
    if (state.newest !== undefined && record.currentSeq !== undefined && record.currentSeq >= state.newest.seq && record.currentSeq >= minSeq && shapedFor(current, record)) {
      return { tree, seq: record.currentSeq, bytesFetched: 0, durationMs: 0 }
    }
    // refused for its selection, it is not retried: waiting could only time out
    const refused = state.refused
    if (refused !== undefined && refused.seq === state.newest?.seq && refused.seq >= minSeq) throw refused.error
    return await new Promise<SyncResult>((resolvePromise, rejectPromise) => {
      const waiter: Waiter = { minSeq, onProgress: options.onProgress, resolve: resolvePromise, reject: rejectPromise }
      state.waiters.add(waiter)
      options.signal?.addEventListener('abort', () => { state.waiters.delete(waiter); rejectPromise(options.signal?.reason ?? new Error('aborted')) }, { once: true })
      if (state.running !== undefined) options.onProgress?.(state.running.sync.progress)
    })
  }

  private ensureSync (state: TreeState): void {
    if (this.stopped || state.newest === undefined) return
    const newest = state.newest
    void (async () => {
      const record = await this.c.catalog.getTree(state.name)
      if (record?.subscribedTo === undefined) return
      if ((record.currentSeq ?? 0) >= newest.seq) { await this.ensureShape(state, record); return }
      if (state.newestComplete) return
      if (state.running?.seq === newest.seq && state.running.generation === 0) return
      if (state.badManifestSeq === newest.seq) return
      if (state.refused?.seq === newest.seq) return
      // A running sync finishes before the newest version is synced (it starts again when this one ends): a
      // sync aborted for every newer announcement never completes when versions come faster than one sync
      // takes (the soak found subscribers stuck at v1 with a staging directory per abandoned version). The
      // mirror lags by at most one sync, as an rsync loop does, and no fetched chunk is thrown away.
      if (state.running !== undefined) {
        this.log.debug({ tree: state.name, seq: state.running.seq, newer: newest.seq }, 'newer version announced; it is synced when the running sync ends')
        return
      }
      clearTimeout(state.retryTimer)
      const current = record.currentSeq === undefined ? undefined : await this.c.catalog.getVersion(state.name, record.currentSeq)
      if (state.newest !== newest || state.running !== undefined || this.stopped) return // moved on meanwhile
      this.startSync(state, newest, record, current, 0)
    })().catch(err => this.log.error({ tree: state.name, err }, 'could not start sync'))
  }

  /**
   * The newest version is held: if its directory was built with another filter than the subscription's
   * (subscribed again with other patterns), rebuild it with the new one under the next generation's name,
   * from the files it holds, local chunks and peers, and flip to it, so that status and the disk agree.
   */
  private async ensureShape (state: TreeState, record: TreeRecord): Promise<void> {
    const seq = record.currentSeq
    if (seq === undefined || state.running !== undefined) return
    const current = await this.c.catalog.getVersion(state.name, seq)
    if (current?.state !== 'complete' || shapedFor(current, record)) return
    const generation = (current.generation ?? 0) + 1
    if (state.refused?.seq === seq && state.refused.generation === generation) return
    const envelope = state.newest?.seq === seq ? state.newest : openEnvelope(current.envelope)
    if (state.running !== undefined || this.stopped) return // started meanwhile
    clearTimeout(state.retryTimer)
    this.log.info({ tree: state.name, seq, generation }, 'subscription filter changed: rebuilding the current version with it')
    this.startSync(state, envelope, record, current, generation)
  }

  /**
   * Brings `envelope` here (generation 0), or rebuilds the version held now under the subscription's changed
   * filter (generation > 0: versions/<seq>.<generation>, flipped to when complete). `current` is the version
   * served now, if any.
   */
  private startSync (state: TreeState, envelope: Envelope, record: TreeRecord, current: VersionRecord | undefined, generation: number): void {
    const selection = selectionOf(record)
    let filter: PathFilter | undefined
    try {
      filter = compileFilter(selection)
    } catch (err) {
      // stored before patterns were checked: the subscription must be made again; nothing is built meanwhile
      state.lastError = (err as Error).message
      this.log.error({ tree: envelope.tree, err }, 'subscription filter refused: subscribe again with valid patterns')
      for (const w of state.waiters) w.reject(err as Error)
      state.waiters.clear()
      return
    }
    const rebuild = generation > 0
    const controller = new AbortController()
    const announceHave = (tree: string, seq: number, ids: ChunkId[]): void => { this.c.announceHave(tree, seq, ids) }
    // every in-flight request and bandwidth wait of this sync listens on this one signal
    setMaxListeners(0, controller.signal)
    const served = current?.state === 'complete' ? current : undefined
    const sync = new VersionSync({
      selfId: this.c.selfId, index: this.c.index, catalog: this.c.catalog, home: this.c.home, log: this.c.log,
      fetch: this.c.fetchFor(envelope.tree), fetchDeltas: this.c.fetchDeltas, verifyFile: this.c.verifyFile, chunkFile: this.c.chunkFile, announceHave, onBadChunk: this.c.onBadChunk, onBadDelta: this.c.onBadDelta, onReceived: (peerId, bytes) => { this.c.onReceived(peerId, bytes, envelope.tree) },
    }, {
      envelope,
      // a rebuild links what it keeps from the very version it rebuilds
      previous: current === undefined ? undefined : this.previousVersion(state.name, current),
      // a seed only stands in for a previous version: once one is held, it is what unchanged files come from
      seed: record.currentSeq === undefined && record.seed !== undefined ? { dir: record.seed, copy: record.seedCopy === true } : undefined,
      previousManifest: async () => await this.previousManifest(state.name, record.currentSeq),
      filter,
      selection,
      generation,
      guard: {
        filter: selection,
        allowEmpty: record.allowEmpty === true,
        maxDropPercent: record.maxDropPercent ?? DEFAULT_MAX_DROP_PERCENT,
        previous: served === undefined ? undefined : { seq: served.seq, files: served.stats?.files, sameFilter: !rebuild && shapedFor(served, record) },
        mirror: record.subscribedTo,
      },
      windowBytes: this.init.windowBytes,
      ownerGraceMs: this.init.ownerGraceMs,
      ownerStallMs: this.init.ownerStallMs,
      signal: controller.signal,
      onProgress: p => { state.lastSync = p; for (const w of state.waiters) w.onProgress?.(p) },
    })
    for (const [peerId, h] of state.holders) if (h.seq === envelope.seq && h.complete) sync.setPeer(peerId, true)
    for (const [peerId, ids] of state.haves) { if (!holdsComplete(state, peerId, envelope.seq)) sync.setPeer(peerId, false); sync.peerHas(peerId, ids) }
    // listening starts with the sync and stays through failed attempts (HAVEs heard during a retry's
    // backoff are kept for the next attempt); it ends when the version is held
    this.c.listenHaves?.(envelope.tree, true)
    // every second, to every direct peer (a few dozen bytes each): HAVE lists go only to the peers known to
    // sync this version (agent/net/have-protocol.ts), so the beacon is how a peer connected mid-sync learns it.
    // A rebuild has none: peers know this site holds the version already.
    const beacon = rebuild ? undefined : setInterval(() => { announceHave(envelope.tree, envelope.seq, []) }, BEACON_INTERVAL_MS)
    if (!rebuild) announceHave(envelope.tree, envelope.seq, [])
    const started = Date.now()
    const done = (async () => {
      if (rebuild) {
        // what an earlier attempt left is reused only if it was built with the same filter (files it selected
        // and this one does not would be renamed into the version with the rest)
        const last = state.lastRebuild
        if (last === undefined || last.seq !== envelope.seq || last.generation !== generation || !sameFilter(last.selection, selection)) await this.discardStaging(envelope.tree, envelope.seq, generation)
        state.lastRebuild = { seq: envelope.seq, generation, selection }
      } else {
        const existing = await this.c.catalog.getVersion(envelope.tree, envelope.seq)
        if (existing?.selection !== undefined && existing.state !== 'complete' && !sameFilter(existing.selection, selection)) await this.discardStaging(envelope.tree, envelope.seq, 0)
        await this.c.catalog.putVersion({ ...(existing ?? { tree: envelope.tree, seq: envelope.seq, envelope: envelope.bytes }), state: 'syncing', selection })
      }
      return await sync.run()
    })().then(async () => {
      clearInterval(beacon)
      state.running = undefined
      state.failures = 0
      if (state.newest === envelope) this.c.listenHaves?.(envelope.tree, false)
      state.lastError = undefined
      if (state.refused?.seq === envelope.seq) state.refused = undefined
      if (state.newest === envelope) state.newestComplete = true
      this.c.headsChanged()
      const result: SyncResult = { tree: envelope.tree, seq: envelope.seq, bytesFetched: sync.progress.bytesDone, durationMs: Date.now() - started }
      this.c.onSyncEnded?.(envelope.tree, { result })
      // a waiter for a given seq is served by any version at least that new; one for "the newest" (minSeq 0)
      // waits while a newer version is still to be synced
      const newestHere = state.newest?.seq === envelope.seq
      for (const w of state.waiters) if ((w.minSeq > 0 || newestHere) && envelope.seq >= w.minSeq) { w.resolve(result); state.waiters.delete(w) }
      // also removes the directory a rebuild replaced
      await applyRetention({ index: this.c.index, catalog: this.c.catalog, home: this.c.home, log: this.c.log }, envelope.tree)
        .catch(err => this.log.error({ tree: envelope.tree, err }, 'retention failed'))
      this.ensureSync(state)
    }, async (err: unknown) => {
      clearInterval(beacon)
      state.running = undefined
      if (controller.signal.aborted) return // superseded, unsubscribed, filter changed or stopping: not a failure
      state.failures++
      state.lastError = (err as Error).message
      if (err instanceof SelectionRefusedError) {
        // retrying cannot change what the filter selects: held until the subscription or the version changes
        state.refused = { seq: envelope.seq, generation, error: err }
        this.log.warn({ tree: envelope.tree, seq: envelope.seq, generation, reason: err.reason, ...err.counts }, err.message)
      } else if (isBadManifest(err)) {
        // root and manifest chunks were verified against the signature: the publisher signed a broken manifest
        state.badManifestSeq = envelope.seq
        this.log.warn({ tree: envelope.tree, seq: envelope.seq, reason: 'bad-manifest', err }, `rejected version: ${describeEnvelope(envelope)}: its manifest is malformed; nothing of it was installed, waiting for a newer version`)
        this.c.onRejected('bad-manifest', state.lastError)
      }
      if (!(err instanceof SelectionRefusedError)) this.log.error({ tree: envelope.tree, seq: envelope.seq, generation, err }, rebuild ? 'rebuild for the changed filter failed' : 'sync failed')
      this.c.onSyncEnded?.(envelope.tree, { error: err as Error })
      // a rebuild's version is the one served: its record stays complete
      if (!rebuild) await this.c.catalog.putVersion({ tree: envelope.tree, seq: envelope.seq, envelope: envelope.bytes, state: 'failed', error: state.lastError, selection }).catch(() => {})
      for (const w of state.waiters) w.reject(err as Error)
      state.waiters.clear()
      if (state.badManifestSeq === envelope.seq || state.refused?.seq === envelope.seq) return
      const backoff = this.init.retryBackoffMs ?? DEFAULT_RETRY_BACKOFF_MS
      const delay = backoff[Math.min(state.failures - 1, backoff.length - 1)] as number
      state.retryTimer = setTimeout(() => this.ensureSync(state), delay)
    })
    state.running = { seq: envelope.seq, generation, selection, sync, controller, beacon, done: done.then(() => {}, () => {}) }
  }

  /** Forgets a staging directory and what the index recorded in it. */
  private async discardStaging (tree: string, seq: number, generation: number): Promise<void> {
    const dir = this.c.home.stagingDir(tree, seq, generation)
    const root = (await this.c.index.listRoots()).find(r => r.kind === 'staging' && r.path === dir)
    if (root !== undefined) await this.c.index.removeRoot(root.id)
    await removeTree(dir)
  }

  /** The chunk list of the manifest of the version we hold (manifest deltas start from it). */
  private async previousManifest (tree: string, currentSeq: number | undefined): Promise<ManifestRoot['chunks'] | undefined> {
    if (currentSeq === undefined) return undefined
    const version = await this.c.catalog.getVersion(tree, currentSeq)
    if (version === undefined) return undefined
    const rootBytes = await this.c.catalog.getBlob(openEnvelope(version.envelope).rootHash)
    return rootBytes === undefined ? undefined : decodeRoot(rootBytes).chunks
  }

  private previousVersion (tree: string, version: VersionRecord): PreviousVersion {
    const catalog = this.c.catalog
    const seq = version.seq
    return {
      // where its files are (never a publisher's source: those are edited in place)
      dir: this.c.home.versionDir(tree, seq, version.generation),
      entries: async function * (): AsyncGenerator<ManifestEntry> {
        const record = await catalog.getVersion(tree, seq)
        if (record === undefined) return
        const rootBytes = await catalog.getBlob(openEnvelope(record.envelope).rootHash)
        if (rootBytes === undefined) return
        yield * readManifestEntries(catalog, decodeRoot(rootBytes))
      },
    }
  }

  async status (): Promise<TreeStatus[]> {
    const out: TreeStatus[] = []
    const records = new Map((await this.c.catalog.listTrees()).map(r => [r.name, r]))
    for (const name of new Set([...records.keys(), ...this.trees.keys()])) {
      const record = records.get(name)
      const state = this.trees.get(name)
      const versions: VersionSummary[] = []
      for (const v of await this.c.catalog.listVersions(name)) {
        try {
          const e = openEnvelope(v.envelope)
          versions.push({ seq: v.seq, label: e.label, state: v.state, createdAtMs: e.createdAtMs, publisherKey: formatPublisherKey(e.publisherKey), root: toHex(e.rootHash), files: v.stats?.files, bytes: v.stats?.bytes, newBytes: v.stats?.newBytes, ...(v.skipped === undefined ? {} : { skipped: v.skipped }) })
        } catch { /* unverifiable record: reported by load() */ }
      }
      const sync = state?.running?.sync.progress ?? (state?.lastError !== undefined && state.lastSync !== undefined ? { ...state.lastSync, phase: 'failed' as const, error: state.lastError } : undefined)
      out.push({ name, currentSeq: record?.currentSeq, newestSeq: state?.newest?.seq, subscribedTo: record?.subscribedTo, include: record?.include, exclude: record?.exclude, allowEmpty: record?.allowEmpty, maxDropPercent: record?.maxDropPercent, trustedKeys: [...this.c.trustedKeys(name)], versions, sync, refused: refusalOf(state?.refused?.error) })
    }
    return out
  }

  async stop (): Promise<void> {
    this.stopped = true
    const running: Array<Promise<void>> = []
    for (const state of this.trees.values()) {
      clearTimeout(state.retryTimer)
      for (const w of state.waiters) w.reject(new Error('agent is shutting down'))
      state.waiters.clear()
      if (state.running !== undefined) { state.running.controller.abort(new Error('agent stopping')); running.push(state.running.done) }
    }
    await Promise.all(running)
  }
}
