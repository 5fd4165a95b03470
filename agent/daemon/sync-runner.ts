// The sync life cycle of the trees: one sync per subscribed tree brings its newest version here (or rebuilds
// the held one for a changed filter); a newer version takes over a running sync at most twice in a row, then
// waits for it to end unless it stalls (SyncRunner.supersedes); a failed sync is retried with backoff; waiters
// hear progress and the outcome.
import { setMaxListeners } from 'node:events'
import type { ChunkId } from '../../protocol/chunk-id.js'
import { describeEnvelope, openEnvelope, type Envelope } from '../../protocol/envelope.js'
import { decodeRoot, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import type { Logger } from '../core/log.js'
import type { TreeRecord, VersionRecord } from '../store/types.js'
import { ManifestError, SelectionRefusedError } from '../versions/errors.js'
import { ManifestBlobMissingError } from '../store/errors.js'
import { VersionSync } from '../sync/version-sync.js'
import { readManifestEntries } from '../store/manifest-io.js'
import { compileFilter, sameFilter, type FilterSpec, type PathFilter } from '../versions/filter.js'
import { DEFAULT_MAX_DROP_PERCENT } from '../versions/selection-guard.js'
import { removeTree } from '../fs/fs-safe.js'
import { applyRetention } from '../versions/retention.js'
import { StallWatch, stallToken } from './stall-watch.js'
import type { PreviousVersion } from '../versions/materializer.js'
import type { SyncResult } from '../api/api.js'
import { GateRefusedError } from './version-hooks.js'
import { holdsComplete, selectionOf, shapedFor, type RunningSync, type TreeManagerComponents, type TreeManagerInit, type TreeState } from './tree-state.js'

const DEFAULT_RETRY_BACKOFF_MS = [1_000, 2_000, 5_000, 10_000, 30_000, 60_000]
const BEACON_INTERVAL_MS = 1_000
/** Running syncs a newer version takes over from before one must finish (SyncRunner.supersedes). */
const MAX_OVERTAKES = 2
/** A sync let finish for a newer version is abandoned after this long without progress (an unservable version). */
const STALL_MS = 15_000

/** A sync failure that no retry can fix: the signed root or manifest does not decode or is inconsistent. */
function isBadManifest (err: unknown): boolean {
  if (err instanceof ManifestError) return !(err.cause instanceof ManifestBlobMissingError)
  return err instanceof InvalidMessageError
}

/** One attempt of a sync, as its outcome handlers see it. */
interface Attempt {
  state: TreeState
  envelope: Envelope
  /** > 0: a rebuild of the version held now (see startSync). */
  generation: number
  rebuild: boolean
  selection: Required<FilterSpec>
  sync: VersionSync
  controller: AbortController
  beacon: ReturnType<typeof setInterval> | undefined
  started: number
  /** The version served when it started (the gate's DELTAMESH_CURRENT_PATH, on-version's previous one). */
  servedSeq?: number
}

export class SyncRunner {
  private stopped = false

  constructor (private readonly c: TreeManagerComponents, private readonly init: TreeManagerInit, private readonly log: Logger) {}

  /** Starts (or rebuilds) what the tree needs now, unless a sync runs, or it is held, refused or broken. */
  ensureSync (state: TreeState): void {
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
      if (state.running !== undefined) {
        if (!this.supersedes(state, newest)) return
        this.log.info({ tree: state.name, seq: state.running.seq, newer: newest.seq, overtaken: state.overtaken }, 'superseded by a newer version; switching')
        state.overtaken++
        state.running.controller.abort(new Error('superseded'))
        await state.running.done
        if (state.newest !== newest) return
      }
      clearTimeout(state.retryTimer)
      const current = record.currentSeq === undefined ? undefined : await this.c.catalog.getVersion(state.name, record.currentSeq)
      if (state.newest !== newest || state.running !== undefined || this.stopped) return // moved on meanwhile
      this.startSync(state, newest, record, current, 0)
    })().catch(err => this.log.error({ tree: state.name, err }, 'could not start sync'))
  }

  /**
   * Whether a newer version takes over from the running sync. It does the first MAX_OVERTAKES times (a newer
   * version usually shares most chunks, and an older one may be unservable: a publisher that edits its source in
   * place serves the newest only). After that the running sync is let finish, or the mirror would never move
   * while versions come faster than one sync takes (the soak saw subscribers stuck at v1 with a staging
   * directory per abandoned version) — unless it stalls: no byte, chunk or phase change for STALL_MS.
   */
  private supersedes (state: TreeState, newest: Envelope): boolean {
    const running = state.running as RunningSync
    if (state.overtaken < MAX_OVERTAKES) return true
    state.stall ??= new StallWatch<RunningSync>(STALL_MS, stalled => {
      this.log.info({ tree: state.name, seq: stalled.seq, newer: state.newest?.seq }, `running sync made no progress for ${STALL_MS / 1000} s; switching to the newer version`)
      state.overtaken = 0
      this.ensureSync(state)
    })
    const progress = (): string => stallToken(running.sync.progress, Date.now())
    state.stall.watch(running, progress, () => state.running === running && !this.stopped)
    this.log.debug({ tree: state.name, seq: running.seq, newer: newest.seq }, 'newer version announced; it is synced when the running sync ends')
    return false
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
    const sync = this.createVersionSync(state, envelope, record, current, { generation, selection, filter, signal: controller.signal, announceHave })
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
    const attempt: Attempt = { state, envelope, generation, rebuild, selection, sync, controller, beacon, started: Date.now(), servedSeq: current?.state === 'complete' ? current.seq : undefined }
    this.c.events.emit('sync-started', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, ...(rebuild ? { reason: 'rebuild for the changed filter' } : {}) })
    const done = (async () => {
      await this.prepareStaging(attempt)
      return await sync.run()
    })().then(async record => { await this.succeeded(attempt, record) }, async (err: unknown) => { await this.failed(attempt, err) })
    state.running = { seq: envelope.seq, generation, selection, sync, controller, beacon, done: done.then(() => {}, () => {}) }
  }

  private createVersionSync (state: TreeState, envelope: Envelope, record: TreeRecord, current: VersionRecord | undefined, build: {
    generation: number
    selection: Required<FilterSpec>
    filter: PathFilter | undefined
    signal: AbortSignal
    announceHave: (tree: string, seq: number, ids: ChunkId[]) => void
  }): VersionSync {
    const { generation, selection } = build
    const rebuild = generation > 0
    const served = current?.state === 'complete' ? current : undefined
    return new VersionSync({
      selfId: this.c.selfId, index: this.c.index, catalog: this.c.catalog, home: this.c.home, log: this.c.log,
      fetch: this.c.fetchFor(envelope.tree), fetchDeltas: this.c.fetchDeltas, explainMissing: this.c.explainMissing, canOwn: this.c.canOwn, verifyFile: this.c.verifyFile, chunkFile: this.c.chunkFile, announceHave: build.announceHave, onBadChunk: this.c.onBadChunk, onBadDelta: this.c.onBadDelta, onReceived: (peerId, bytes) => { this.c.onReceived(peerId, bytes, envelope.tree) },
    }, {
      envelope,
      // a rebuild links what it keeps from the very version it rebuilds
      previous: current === undefined ? undefined : this.previousVersion(state.name, current),
      // a seed only stands in for a previous version: once one is held, it is what unchanged files come from
      seed: record.currentSeq === undefined && record.seed !== undefined ? { dir: record.seed, copy: record.seedCopy === true } : undefined,
      previousManifest: async () => await this.previousManifest(state.name, record.currentSeq),
      filter: build.filter,
      selection,
      generation,
      // a new version only: a rebuild for a changed filter is the version served already
      gate: rebuild ? undefined : this.c.hooks.gateFor(record, envelope, current, build.signal),
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
      signal: build.signal,
      onProgress: p => { state.lastSync = p; this.c.events.progress(p); for (const w of state.waiters) w.onProgress?.(p) },
    })
  }

  /** Before a sync runs: the staging directory an earlier attempt left is kept only if it fits this one. */
  private async prepareStaging ({ state, envelope, generation, rebuild, selection }: Attempt): Promise<void> {
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
  }

  /**
   * The version is held: peers and waiters are told, retention runs, and the next version (if any) starts.
   * Exposed (the subscription path flipped), the post-version command follows; refused by the gate, waiters
   * hear why.
   */
  private async succeeded ({ state, envelope, sync, beacon, started, rebuild, servedSeq }: Attempt, record: VersionRecord): Promise<void> {
    clearInterval(beacon)
    state.running = undefined
    state.failures = 0
    state.overtaken = 0
    state.stall?.stop()
    if (state.newest === envelope) this.c.listenHaves?.(envelope.tree, false)
    state.lastError = undefined
    if (state.refused?.seq === envelope.seq) state.refused = undefined
    if (state.newest === envelope) state.newestComplete = true
    this.c.headsChanged()
    const result: SyncResult = { tree: envelope.tree, seq: envelope.seq, bytesFetched: sync.progress.bytesDone, durationMs: Date.now() - started }
    this.c.onSyncEnded?.(envelope.tree, { result })
    this.c.events.progressEnded(envelope.tree)
    this.c.events.emit('sync-complete', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, bytesFetched: result.bytesFetched, durationMs: result.durationMs })
    const refused = record.gate?.outcome === 'refused' && !rebuild
    if (!refused) this.c.hooks.flipped(envelope.tree, envelope.seq, rebuild ? envelope.seq : servedSeq, (await this.c.catalog.getTree(envelope.tree))?.subscribedTo, !rebuild)
    const gateError = refused ? new GateRefusedError(envelope.tree, envelope.seq, record.gate?.reason ?? 'refused', servedSeq) : undefined
    // a waiter for a given seq is served by any version at least that new; one for "the newest" (minSeq 0)
    // waits while a newer version is still to be synced
    const newestHere = state.newest?.seq === envelope.seq
    for (const w of state.waiters) {
      if (!((w.minSeq > 0 || newestHere) && envelope.seq >= w.minSeq)) continue
      if (gateError === undefined) w.resolve(result)
      else w.reject(gateError)
      state.waiters.delete(w)
    }
    // also removes the directory a rebuild replaced
    await applyRetention({ index: this.c.index, catalog: this.c.catalog, home: this.c.home, log: this.c.log }, envelope.tree)
      .catch(err => this.log.error({ tree: envelope.tree, err }, 'retention failed'))
    this.ensureSync(state)
  }

  /** Aborted (not a failure), refused for its selection, a broken manifest (not retried), or retried with backoff. */
  private async failed ({ state, envelope, generation, rebuild, selection, controller, beacon }: Attempt, err: unknown): Promise<void> {
    clearInterval(beacon)
    state.running = undefined
    this.c.events.progressEnded(envelope.tree)
    if (controller.signal.aborted) return // superseded, unsubscribed, filter changed or stopping: not a failure
    state.failures++
    state.lastError = (err as Error).message
    this.c.events.emit('sync-failed', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, reason: (err as Error).name, message: state.lastError })
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

  /** Stops every sync and retry, and fails the waiters: the agent is stopping. */
  async stop (states: Iterable<TreeState>): Promise<void> {
    this.stopped = true
    const running: Array<Promise<void>> = []
    for (const state of states) {
      clearTimeout(state.retryTimer)
      state.stall?.stop()
      for (const w of state.waiters) w.reject(new Error('agent is shutting down'))
      state.waiters.clear()
      if (state.running !== undefined) { state.running.controller.abort(new Error('agent stopping')); running.push(state.running.done) }
    }
    await Promise.all(running)
  }
}
