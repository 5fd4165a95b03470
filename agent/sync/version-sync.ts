import { toHex, type ChunkId } from '../../protocol/chunk-id.js'
import { describeEnvelope, type Envelope } from '../../protocol/envelope.js'
import { decodeRoot, type FileEntry, type ManifestEntry, type ManifestRoot } from '../../protocol/manifest.js'
import { InvalidMessageError } from '../../protocol/errors.js'
import type { HomeLayout } from '../core/home.js'
import type { Logger } from '../core/log.js'
import type { Catalog, ChunkIndex, VersionRecord } from '../store/types.js'
import { Materializer, type MaterializerComponents, type PreviousVersion, type Seed } from '../versions/materializer.js'
import type { MaterializeInit } from '../versions/build-types.js'
import { readManifestEntries, readManifestHeader } from '../store/manifest-io.js'
import type { PathFilter } from '../versions/filter.js'
import type { FilterSpec } from '../versions/filter.js'
import { checkSelection, countSelected, type SelectionGuard } from '../versions/selection-guard.js'
import type { Stuck, SyncPhase, SyncProgress } from './progress.js'
import { formatBytes } from '../core/format.js'
import { SwarmScheduler, type WantedChunk } from './swarm-scheduler.js'
import { pumpChunks, type FetchFn } from './chunk-pump.js'
import { RateMeter } from '../bandwidth/rate-meter.js'
import { runDeltaPhase } from './delta-phase.js'
import { manifestViaDeltas } from '../delta/manifest-delta.js'
import { isLarge, runChunkDeltaPhase } from '../delta/chunk-deltas.js'
import type { ChunkRef } from '../../protocol/manifest.js'

export interface VersionSyncComponents {
  selfId: string
  index: ChunkIndex
  catalog: Catalog
  home: HomeLayout
  log: Logger
  fetch: FetchFn
  /** Deltas by key from one peer (see delta-phase.ts); absent: every missing chunk is fetched plainly. */
  fetchDeltas?: (peerId: string, keys: Uint8Array[], signal: AbortSignal) => Promise<Map<string, Uint8Array>>
  /** Tell peers syncing the same version which chunks we now hold (HAVE), so they can take them from us. */
  announceHave?: (tree: string, seq: number, ids: ChunkId[]) => void
  onBadChunk?: (peerId: string, reason: string) => void
  /** A delta from this peer rebuilt the wrong bytes: unlike a bad chunk, no network layer has struck it yet. */
  onBadDelta?: (peerId: string, reason: string) => void
  /** Bytes received from the network for this version (per peer), for counters. */
  onReceived?: (peerId: string, bytes: number) => void
  /** Hashes a file against a chunk list (the chunker pool): files are only taken from a seed after it. */
  verifyFile?: MaterializerComponents['verifyFile']
  /** Chunks a file (the chunker pool): a seed file that differs lends its unchanged chunks. */
  chunkFile?: MaterializerComponents['chunkFile']
  /** Why chunks of a version may be missing everywhere, if some site says (its publisher's source changed). */
  explainMissing?: (tree: string, seq: number) => string | undefined
  /** Whether a site syncing this version can fetch from anyone but us (network view: its connections); default: yes. */
  canOwn?: (peerId: string, tree: string, seq: number) => boolean
}

export interface VersionSyncInit {
  envelope: Envelope
  previous?: PreviousVersion
  /** An existing copy of the tree to take matching files from (a first version). */
  seed?: Omit<Seed, 'chunking'>
  /** The chunks of the previous version's manifest (in the catalog): manifest deltas start from them. */
  previousManifest?: () => Promise<ChunkRef[] | undefined>
  filter?: PathFilter
  /** The subscription patterns `filter` was made from (recorded with the version). */
  selection?: FilterSpec
  /** Checked before anything is fetched or built: a selection that would empty or gut the mirror is refused. */
  guard?: SelectionGuard
  /** > 0: rebuild the version held now under a changed filter (versions/<seq>.<generation>); no deltas. */
  generation?: number
  /** Decides, once the version is complete, whether it is exposed (MaterializeInit.gate). */
  gate?: MaterializeInit['gate']
  windowBytes: number
  ownerGraceMs?: number
  ownerStallMs?: number
  signal: AbortSignal
  onProgress?: (progress: SyncProgress) => void
}

/** How long a site still planning keeps its share (planning a large version locally takes seconds). */
const DEFAULT_OWNER_GRACE_MS = 10_000
const DEFAULT_OWNER_STALL_MS = 3_000
const HAVE_TICK_MS = 200
/** How often a sync checks whether it can still move (progress.stuck). */
const STUCK_CHECK_MS = 1_000
/**
 * How often we announce what we wrote: every 200 ms among a few sites, up to once a second among many. Every
 * syncing site verifies the signature of every other's HAVEs, so their cost grows with sites × sites: with 16
 * sites syncing one tree, gossipsub's validation of HAVEs was 40 % of a subscriber's CPU (profiled; 17 agents
 * on 2 cores were CPU-bound). A chunk announced up to a second later delays only its second hop.
 */
export function haveIntervalMs (syncingPeers: number): number {
  return Math.min(1000, HAVE_TICK_MS * Math.max(1, Math.ceil(syncingPeers / 4)))
}
/** A peer's window: 1.5 s of what it delivers (a few round trips on any WAN), at least two large chunks' worth. */
const ADAPTIVE_WINDOW = { minBytes: 512 * 1024, seconds: 1.5 }

/**
 * Brings one signed version to this site: root and manifest chunks first (verified, kept in the catalog),
 * then a plan against everything already on disk, then the missing chunks from whichever peers hold them,
 * then the atomic install. Peers are fed in from outside as heads and HAVEs arrive (setPeer, peerHas).
 */
export class VersionSync {
  private scheduler: SwarmScheduler
  private readonly peers = new Map<string, boolean>()
  private readonly haves = new Map<string, string[]>()
  private readonly rate = new RateMeter()
  private progressValue: SyncProgress
  private readonly log: Logger

  constructor (private readonly components: VersionSyncComponents, private readonly init: VersionSyncInit) {
    const e = init.envelope
    this.log = components.log.child({ tree: e.tree, seq: e.seq })
    this.scheduler = this.newScheduler()
    this.progressValue = { tree: e.tree, seq: e.seq, phase: 'waiting', bytesTotal: 0, bytesDone: 0, chunksTotal: 0, chunksDone: 0, bytesLocal: 0, rateBps: 0, startedAtMs: Date.now(), sources: 0 }
  }

  get progress (): SyncProgress { return { ...this.progressValue, rateBps: this.rate.rate(), sources: this.peers.size } }
  get envelope (): Envelope { return this.init.envelope }

  /** A peer holds this version completely (true) or is syncing it too (false). */
  setPeer (peerId: string, complete: boolean): void {
    this.peers.set(peerId, complete)
    this.scheduler.setPeer(peerId, complete)
    const known = this.haves.get(peerId)
    if (known !== undefined) this.scheduler.peerHas(peerId, known)
  }

  private syncingPeers (): number {
    let n = 0
    for (const complete of this.peers.values()) if (!complete) n++
    return n
  }

  removePeer (peerId: string): void {
    this.peers.delete(peerId)
    this.scheduler.removePeer(peerId)
  }

  peerHas (peerId: string, ids: ChunkId[]): void {
    const hexes = ids.map(toHex)
    const list = this.haves.get(peerId) ?? []
    list.push(...hexes)
    this.haves.set(peerId, list)
    this.scheduler.peerHas(peerId, hexes)
  }

  async run (): Promise<VersionRecord> {
    const stuckTimer = setInterval(() => { this.checkStuck() }, STUCK_CHECK_MS)
    try {
      return await this.runPhases()
    } finally {
      clearInterval(stuckTimer)
    }
  }

  /** Sets progress.stuck while the chunks still needed have no source (told to waiters when it changes). */
  private checkStuck (): void {
    const p = this.progressValue
    const u = p.phase === 'fetching' || p.phase === 'fetching-manifest' ? this.scheduler.unreachable() : undefined
    let stuck: Omit<Stuck, 'sinceMs'> | undefined
    if (u !== undefined) {
      const { tree, seq } = this.init.envelope
      const what = `${u.chunks} chunk${u.chunks === 1 ? '' : 's'} (${formatBytes(u.bytes)}) of ${tree}@${seq}`
      const explained = this.components.explainMissing?.(tree, seq)
      if (explained !== undefined) stuck = { reason: 'source-changed', message: `no peer holds ${what}: ${explained}` }
      else if (u.usablePeers === 0) stuck = { reason: 'no-peers', message: `no connected peer holds ${what}: waiting for one (\`deltamesh peers\` shows who is connected)` }
      else stuck = { reason: 'no-source', message: `no peer holds ${what}: the ${u.usablePeers} peer${u.usablePeers === 1 ? '' : 's'} asked answered they do not have them; waiting for a peer that does` }
    }
    if (stuck?.message === p.stuck?.message) return
    p.stuck = stuck === undefined ? undefined : { ...stuck, sinceMs: Date.now() }
    if (stuck !== undefined) this.log.warn({ reason: stuck.reason }, stuck.message)
    this.emit()
  }

  private async runPhases (): Promise<VersionRecord> {
    const { envelope, signal } = this.init
    const root = await this.fetchManifest()
    this.phase('planning')
    if (this.init.guard !== undefined) {
      const counted = await countSelected(readManifestEntries(this.components.catalog, root, signal), this.init.filter, signal)
      const counts = checkSelection({ tree: envelope.tree, seq: envelope.seq }, counted, this.init.guard)
      this.log.debug({ ...counts }, 'selection checked')
    }
    const header = await readManifestHeader(this.components.catalog, root)
    const materializer = new Materializer(
      { index: this.components.index, catalog: this.components.catalog, home: this.components.home, log: this.components.log, verifyFile: this.components.verifyFile, chunkFile: this.components.chunkFile },
      {
        tree: envelope.tree,
        seq: envelope.seq,
        entries: (): AsyncIterable<ManifestEntry> => readManifestEntries(this.components.catalog, root, signal),
        filter: this.init.filter,
        selection: this.init.selection,
        generation: this.init.generation,
        previous: this.init.previous,
        seed: this.init.seed === undefined ? undefined : { ...this.init.seed, chunking: header.chunking },
        rootTimes: header.root,
        envelope: envelope.bytes,
        gate: this.init.gate,
        signal,
      })
    let plan = await materializer.prepare()
    const stats = materializer.stats
    plan = await this.viaDeltas(plan, root, materializer)
    this.progressValue.bytesLocal = stats.localBytes
    this.progressValue.chunksTotal = plan.length
    this.progressValue.bytesTotal = plan.reduce((n, c) => n + c.size, 0)
    this.log.info({ files: stats.files, linked: stats.linkedFiles, seeded: stats.seededFiles, localChunks: stats.localChunks, resumed: stats.resumedChunks, missingChunks: plan.length, missingBytes: this.progressValue.bytesTotal }, 'planned')

    this.phase('fetching')
    this.scheduler = this.newScheduler()
    this.scheduler.setNeeded(plan.map(c => ({ id: c.id, size: c.size })))
    const pendingHave: ChunkId[] = []
    const flushHave = (): void => {
      if (pendingHave.length === 0) return
      this.components.announceHave?.(envelope.tree, envelope.seq, pendingHave.splice(0))
    }
    let lastFlushMs = 0
    const haveTimer = setInterval(() => {
      const now = Date.now()
      if (now - lastFlushMs < haveIntervalMs(this.syncingPeers())) return
      lastFlushMs = now
      flushHave()
    }, HAVE_TICK_MS)
    try {
      await pumpChunks({
        scheduler: this.scheduler,
        fetch: this.components.fetch,
        signal,
        onChunk: async (id, bytes, peerId) => {
          if (await materializer.fill(id, bytes)) {
            this.progressValue.chunksDone++
            this.progressValue.bytesDone += bytes.byteLength
            this.rate.add(bytes.byteLength)
            this.components.onReceived?.(peerId, bytes.byteLength)
            pendingHave.push(id)
            this.emit()
          }
        },
        onBadChunk: (peerId, failure) => {
          this.log.warn({ peer: peerId, chunk: toHex(failure.id) }, 'peer sent a chunk that does not match its hash; not written, peer avoided')
          this.components.onBadChunk?.(peerId, failure.error?.message ?? 'hash mismatch')
        },
      })
    } finally {
      clearInterval(haveTimer)
      flushHave()
      await materializer.close()
    }
    this.phase('finalizing')
    const record = await materializer.finalize()
    this.phase('complete')
    this.log.info({ bytesFetched: this.progressValue.bytesDone, ms: Date.now() - this.progressValue.startedAtMs }, `synced ${describeEnvelope(envelope)}`)
    return record
  }

  /**
   * Small changed files rebuilt from our previous version and a delta the publisher computed once (asked
   * of a peer that holds the new version completely); returns the plan minus the chunks that verified.
   */
  private async viaDeltas<T extends { id: ChunkId }> (plan: T[], root: ManifestRoot, materializer: Materializer): Promise<T[]> {
    const { previous, signal } = this.init
    const fetchDeltas = this.components.fetchDeltas
    const holder = [...this.peers].find(([, complete]) => complete)?.[0]
    // a rebuild's "previous" is the same version: its missing files have no older content to start from
    if ((this.init.generation ?? 0) > 0) return plan
    if (previous === undefined || fetchDeltas === undefined || holder === undefined || plan.length === 0) return plan
    const missing = new Set(plan.map(c => toHex(c.id)))
    // large files lacking chunks, for chunk deltas below (no small-file delta touches their chunks)
    const large: FileEntry[] = []
    const r = await runDeltaPhase({
      missing,
      entries: () => readManifestEntries(this.components.catalog, root, signal),
      onLacking: e => { if (isLarge(e.size)) large.push(e) },
      previousEntries: previous.entries,
      index: this.components.index,
      catalog: this.components.catalog,
      fetchDeltas: async (keys, s) => ({ peer: holder, deltas: await fetchDeltas(holder, keys, s) }),
      fill: async (id, bytes) => await materializer.fill(id, bytes),
      onBadDelta: (peerId, reason) => { this.components.onBadChunk?.(peerId, reason); this.components.onBadDelta?.(peerId, reason) },
      log: this.log,
      signal,
    })
    if (r.asked > 0) this.log.info({ peer: holder, ...r }, 'deltas')
    this.progressValue.bytesLocal += r.chunkBytes
    this.deltaStats = r
    // large files: a delta per new chunk, against the same path's previous content around it
    if (large.length > 0) {
      const wanted = new Set(large.map(e => e.path))
      const previousLarge = new Map<string, FileEntry>()
      for await (const e of previous.entries()) if (e.type === 'file' && wanted.has(e.path)) previousLarge.set(e.path, e)
      const c = await runChunkDeltaPhase({
        missing, targets: large, previous: previousLarge, index: this.components.index, catalog: this.components.catalog, log: this.log, signal,
        fetchDeltas: async (keys, s) => await fetchDeltas(holder, keys, s),
        fill: async (id, bytes) => await materializer.fill(id, bytes),
        onBadDelta: reason => { this.components.onBadChunk?.(holder, reason); this.components.onBadDelta?.(holder, reason) },
      })
      if (c.asked > 0) this.log.info({ peer: holder, ...c }, 'chunk deltas')
      this.progressValue.bytesLocal += c.chunkBytes
    }
    return plan.filter(c => missing.has(toHex(c.id)))
  }

  /** What the delta phase of this sync did (undefined: it did not run). */
  deltaStats?: Awaited<ReturnType<typeof runDeltaPhase>>

  /** Root blob, then manifest chunks, each verified by hash and kept in the catalog. */
  private async fetchManifest (): Promise<ManifestRoot> {
    const { envelope, signal } = this.init
    const { catalog } = this.components
    this.phase('fetching-manifest')
    if (!(await catalog.hasBlob(envelope.rootHash))) {
      await this.fetchBlobs([{ id: envelope.rootHash, size: envelope.rootSize }], signal)
    }
    const rootBytes = await catalog.getBlob(envelope.rootHash)
    if (rootBytes === undefined) throw new InvalidMessageError(`root of ${describeEnvelope(envelope)} vanished from the catalog`)
    const root = decodeRoot(rootBytes)
    const missing: WantedChunk[] = []
    for (const c of root.chunks) if (!(await catalog.hasBlob(c.id))) missing.push(c)
    await this.fetchBlobs(await this.manifestViaDeltas(root, missing), signal)
    return root
  }

  /** Manifest chunks rebuilt from the previous manifest and deltas a holder serves; returns what is still missing. */
  private async manifestViaDeltas (root: ManifestRoot, missing: WantedChunk[]): Promise<WantedChunk[]> {
    const { previousManifest, signal } = this.init
    const fetchDeltas = this.components.fetchDeltas
    const holder = [...this.peers].find(([, complete]) => complete)?.[0]
    if (previousManifest === undefined || fetchDeltas === undefined || holder === undefined || missing.length === 0) return missing
    const prev = await previousManifest()
    if (prev === undefined) return missing
    const r = await manifestViaDeltas({
      prev, next: root.chunks, missing, catalog: this.components.catalog, log: this.log, signal,
      fetchDeltas: async (keys, s) => await fetchDeltas(holder, keys, s),
      onBadDelta: reason => { this.components.onBadChunk?.(holder, reason); this.components.onBadDelta?.(holder, reason) },
    })
    if (r.asked > 0) this.log.info({ peer: holder, asked: r.asked, applied: r.applied, rejected: r.rejected, deltaBytes: r.deltaBytes, chunkBytes: r.chunkBytes }, 'manifest deltas')
    return r.missing
  }

  private async fetchBlobs (wanted: WantedChunk[], signal: AbortSignal): Promise<void> {
    if (wanted.length === 0) return
    // Root and manifest are small and needed before anything else: no ownership, ask every holder.
    this.scheduler = this.newScheduler(false)
    this.scheduler.setNeeded(wanted)
    // Anyone syncing this version already fetched its root and manifest: partial peers count as holders.
    for (const [peerId, complete] of this.peers) if (!complete) this.scheduler.peerHas(peerId, wanted.map(w => w.id))
    await pumpChunks({
      scheduler: this.scheduler,
      fetch: this.components.fetch,
      signal,
      onChunk: async (id, bytes) => { await this.components.catalog.putBlob(id, bytes) },
      onBadChunk: (peerId, failure) => this.components.onBadChunk?.(peerId, failure.error?.message ?? 'hash mismatch'),
    })
  }

  private newScheduler (cooperative = true): SwarmScheduler {
    const s = new SwarmScheduler({
      cooperative,
      selfId: this.components.selfId,
      windowBytes: this.init.windowBytes,
      adaptiveWindow: ADAPTIVE_WINDOW,
      ownerGraceMs: this.init.ownerGraceMs ?? DEFAULT_OWNER_GRACE_MS,
      ownerStallMs: this.init.ownerStallMs ?? DEFAULT_OWNER_STALL_MS,
      canOwn: peerId => this.components.canOwn?.(peerId, this.init.envelope.tree, this.init.envelope.seq) ?? true,
    })
    for (const [peerId, complete] of this.peers) {
      s.setPeer(peerId, complete)
      const known = this.haves.get(peerId)
      if (known !== undefined) s.peerHas(peerId, known)
    }
    return s
  }

  private phase (phase: SyncPhase): void {
    this.progressValue.phase = phase
    if (phase !== 'fetching' && phase !== 'fetching-manifest') this.progressValue.stuck = undefined
    this.emit()
  }

  private emit (): void {
    this.init.onProgress?.(this.progress)
  }
}
