// The trees of a running agent, in three parts: this file decides which signed version of a tree is the newest
// (admission) and who holds what (heads, HAVE); subscriptions.ts keeps subscriptions and sync waiters;
// sync-runner.ts runs the syncs. Their shared state is tree-state.ts.
import { toHex } from '../../protocol/chunk-id.js'
import { describeEnvelope, formatPublisherKey, openEnvelope, type Envelope } from '../../protocol/envelope.js'
import type { HeadEntry } from '../../protocol/messages.js'
import type { HaveMessage } from '../../protocol/have.js'
import type { Logger } from '../core/log.js'
import { admitEnvelope, type Admission } from '../net/admission.js'
import type { SelectionRefusedError } from '../versions/errors.js'
import { GateRefusedError } from './version-hooks.js'
import type { AcceptResult, GateRefusal, SelectionRefusal, SubscribeRequest, SyncResult, TreeStatus, VersionSummary, WaitForSyncOptions } from '../api/api.js'
import { holdsComplete, trustedKeys, TreeStates, type TreeManagerComponents, type TreeManagerInit, type TreeState } from './tree-state.js'
import { SyncRunner } from './sync-runner.js'
import { refusedOffer, unservableMessage, waitingProgress, waitingReason, type RefusedOffer } from './why-waiting.js'
import { Subscriptions } from './subscriptions.js'

export type { TreeManagerComponents, TreeManagerInit } from './tree-state.js'

/** The newest version the gate refused, if it is newer than the one served. */
function gateRefusalOf (tree: string, versions: VersionSummary[], currentSeq: number | undefined): GateRefusal | undefined {
  const v = versions.filter(x => x.state === 'complete' && x.gate?.outcome === 'refused' && x.seq > (currentSeq ?? 0)).sort((a, b) => b.seq - a.seq)[0]
  if (v?.gate === undefined) return undefined
  return { ...v.gate, seq: v.seq, label: v.label, currentSeq, message: new GateRefusedError(tree, v.seq, v.gate.reason ?? 'refused', currentSeq).message }
}

function refusalOf (err: SelectionRefusedError | undefined): SelectionRefusal | undefined {
  if (err === undefined) return undefined
  return { seq: err.seq, reason: err.reason, ...err.counts, maxDropPercent: err.maxDropPercent, message: err.message }
}

/**
 * Per-tree state of a running agent: which signed version is the newest (admission), who holds what
 * (heads, HAVE), and the one sync per subscribed tree that brings the newest version here. A newer
 * version takes over a running sync at most twice in a row, then waits for it unless it stalls
 * (SyncRunner.supersedes); a failed sync is retried with backoff; waiters (`deltamesh sync`) hear progress
 * and the outcome.
 */
export class TreeManager {
  private readonly trees = new TreeStates()
  private readonly log: Logger
  private readonly runner: SyncRunner
  private readonly subscriptions: Subscriptions

  constructor (private readonly c: TreeManagerComponents, init: TreeManagerInit) {
    this.log = c.log.child({ component: 'trees' })
    this.runner = new SyncRunner(c, init, this.log)
    this.subscriptions = new Subscriptions(c, this.trees, this.runner, this.log)
  }

  /** Restores state from the catalog and resumes interrupted syncs (staging and index survive a restart). */
  async load (): Promise<void> {
    for (const record of await this.c.catalog.listTrees()) {
      const state = this.trees.state(record.name)
      for (const version of await this.c.catalog.listVersions(record.name)) {
        try {
          const envelope = openEnvelope(version.envelope)
          if (state.newest === undefined || envelope.seq > state.newest.seq) { state.newest = envelope; state.newestComplete = version.state === 'complete' }
        } catch (err) {
          this.log.error({ tree: record.name, seq: version.seq, err }, 'stored envelope no longer verifies; ignored')
        }
      }
      if (record.subscribedTo !== undefined || record.currentSeq !== undefined) this.c.watchTree(record.name)
      this.runner.ensureSync(state)
    }
  }

  /** An envelope from gossip, a peer's heads, or our own publish. */
  async offer (envelope: Envelope, from: string | undefined, via: 'gossip' | 'heads' | 'local'): Promise<Admission> {
    const state = this.trees.state(envelope.tree)
    const newest = state.newest
    let knownRoot: Uint8Array | undefined
    if (newest !== undefined && envelope.seq < newest.seq) {
      const known = await this.c.catalog.getVersion(envelope.tree, envelope.seq)
      if (known !== undefined) { try { knownRoot = openEnvelope(known.envelope).rootHash } catch { /* reported by load() */ } }
    }
    // re-read after the await: another offer may have moved the head meanwhile
    const admission = admitEnvelope(envelope, trustedKeys(this.c, envelope.tree), state.newest === undefined ? undefined : { seq: state.newest.seq, rootHash: state.newest.rootHash }, knownRoot)
    if (admission.verdict === 'reject') {
      // a peer that is merely behind shows us its older head: that is not an attack
      const lagging = via === 'heads' && state.newest !== undefined && envelope.seq < state.newest.seq && trustedKeys(this.c, envelope.tree).has(formatPublisherKey(envelope.publisherKey))
      if (!lagging) {
        this.log.warn({ tree: envelope.tree, seq: envelope.seq, peer: from, via, reason: admission.code }, `rejected version: ${admission.reason}`)
        this.c.onRejected(admission.code, admission.reason)
        this.c.events.emit('version-refused', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, peer: from, via, reason: admission.code, message: admission.reason })
        // newer than anything admitted: a subscriber waits for it in vain, and is told why
        if (envelope.seq > (state.newest?.seq ?? 0) && envelope.seq >= (state.refusedOffer?.seq ?? 0)) this.noteRefused(state, refusedOffer(envelope, admission.code, admission.reason, from === undefined ? undefined : this.c.peerName?.(from) ?? from))
      }
      return admission
    }
    if (admission.verdict === 'duplicate') return admission
    // decided synchronously, so the same version arriving by gossip and by heads at once is admitted once
    state.newest = envelope
    if (state.refusedOffer !== undefined && envelope.seq >= state.refusedOffer.seq) state.refusedOffer = undefined
    state.newestComplete = false
    state.haves.clear()
    const existing = await this.c.catalog.getVersion(envelope.tree, envelope.seq)
    if (existing === undefined) await this.c.catalog.putVersion({ tree: envelope.tree, seq: envelope.seq, envelope: envelope.bytes, state: 'announced' })
    if (state.newest === envelope) state.newestComplete = existing?.state === 'complete'
    this.log.info({ peer: from, via }, `new version ${describeEnvelope(envelope)}${envelope.label === '' ? '' : ` (${envelope.label})`}`)
    this.c.events.emit('version-announced', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, peer: from, via })
    this.c.events.emit('version-admitted', { tree: envelope.tree, seq: envelope.seq, label: envelope.label, peer: from, via })
    this.runner.ensureSync(state)
    return admission
  }

  /** Our own publish: the version is complete here by construction. */
  async published (envelope: Envelope): Promise<void> {
    this.c.watchTree(envelope.tree)
    await this.offer(envelope, undefined, 'local')
    const state = this.trees.state(envelope.tree)
    state.newestComplete = true
    this.c.headsChanged()
  }

  async peerHeads (peerId: string, heads: Array<{ envelope: Envelope, complete: boolean }>): Promise<void> {
    for (const { envelope, complete } of heads) {
      const state = this.trees.state(envelope.tree)
      state.holders.set(peerId, { seq: envelope.seq, complete })
      await this.offer(envelope, peerId, 'heads')
      const running = state.running
      if (running !== undefined && complete && envelope.seq === running.seq) running.sync.setPeer(peerId, true)
    }
  }

  /** Records a refused newer version and tells the `sync` waiters (no sync runs to tell them anything). */
  private noteRefused (state: TreeState, offer: RefusedOffer): void {
    state.refusedOffer = offer
    if (state.running !== undefined || state.waiters.size === 0) return
    const stuck = waitingReason(offer, { name: state.name, subscribedTo: '-' })
    if (stuck !== undefined) for (const w of state.waiters) w.onProgress?.(waitingProgress(state.name, offer.seq, stuck))
  }

  /** What a verify found of a held version (files differing): `sync` says a damaged version is damaged, until a clean verify. */
  verified (tree: string, seq: number, files: number): void {
    const state = this.trees.state(tree)
    if (files === 0) { if (state.damaged?.seq === seq) state.damaged = undefined; return }
    state.damaged = { seq, message: `${tree}@${seq} is held here but damaged: ${files === 1 ? '1 file differs' : `${files} files differ`} from the manifest; run deltamesh verify --repair --home DIR ${tree}` }
  }

  /** A chunk read from a held version's files no longer matched its id (edited behind the agent's back). */
  chunkChanged (tree: string, seq: number): void {
    const state = this.trees.state(tree)
    if (state.damaged?.seq === seq) return
    state.damaged = { seq, message: `${tree}@${seq} is held here but damaged: a chunk read from its files no longer matched the manifest; run deltamesh verify --repair --home DIR ${tree}` }
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

  async subscribe (request: SubscribeRequest): Promise<void> { await this.subscriptions.subscribe(request) }

  async unsubscribe (tree: string): Promise<void> { await this.subscriptions.unsubscribe(tree) }

  async waitForSync (tree: string, options: WaitForSyncOptions): Promise<SyncResult> { return await this.subscriptions.waitForSync(tree, options) }

  async accept (tree: string, seq: number): Promise<AcceptResult> { return await this.subscriptions.accept(tree, seq) }

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
          versions.push({ seq: v.seq, label: e.label, state: v.state, createdAtMs: e.createdAtMs, publisherKey: formatPublisherKey(e.publisherKey), root: toHex(e.rootHash), files: v.stats?.files, bytes: v.stats?.bytes, newBytes: v.stats?.newBytes, ...(v.skipped === undefined ? {} : { skipped: v.skipped }), ...(v.gate === undefined ? {} : { gate: v.gate }), ...(v.unservable === undefined ? {} : { unservable: { ...v.unservable, message: unservableMessage(name, v.seq, v.unservable) } }) })
        } catch { /* unverifiable record: reported by load() */ }
      }
      const sync = state?.running?.sync.progress ?? (state?.lastError !== undefined && state.lastSync !== undefined ? { ...state.lastSync, phase: 'failed' as const, error: state.lastError } : undefined)
      const stuck = state?.running !== undefined ? sync?.stuck : waitingReason(state?.refusedOffer, record)
      out.push({
        ...(stuck === undefined ? {} : { stuck }), name, currentSeq: record?.currentSeq, newestSeq: state?.newest?.seq, subscribedTo: record?.subscribedTo, include: record?.include, exclude: record?.exclude, allowEmpty: record?.allowEmpty, maxDropPercent: record?.maxDropPercent, trustedKeys: [...this.c.trustedKeys(name)], versions, sync, refused: refusalOf(state?.refused?.error),
        gate: record?.gate, onVersion: record?.onVersion, gateRefused: gateRefusalOf(name, versions, record?.currentSeq), hooks: record?.gate === undefined && record?.onVersion === undefined ? undefined : this.c.hooks.statsOf(name),
      })
    }
    return out
  }

  async stop (): Promise<void> {
    await this.runner.stop(this.trees.values())
    await this.c.hooks.stop()
  }
}
